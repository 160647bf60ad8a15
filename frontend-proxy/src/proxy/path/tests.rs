use super::*;
use proptest::prelude::*;

fn canon(path: &str) -> Option<String> {
    canonicalize(path.as_bytes()).map(|p| String::from_utf8(p).unwrap())
}

fn opts(normalize: bool, merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathNormalization {
    PathNormalization { normalize, merge_slashes, escaped_slashes }
}

fn run(target: &str, o: PathNormalization) -> Outcome {
    normalize(target.as_bytes(), &o)
}

fn rewritten(s: &str) -> Outcome {
    Outcome::Rewritten(s.as_bytes().to_vec())
}

/// Envoy's path_utility_test cases (NormalizeValidPaths, NormalizeCasePath).
#[test]
fn canonicalizes_as_envoy() {
    for (input, expected) in [
        ("/a/b/../c", "/a/c"),
        ("/a/b/./c", "/a/b/c"),
        ("a/b/../c", "/a/c"),
        ("/a/b/../../../../c", "/c"),
        ("/a/..\\c", "/c"),
        ("/%c0%af", "/%c0%af"),
        ("/%5c%25", "/%5c%25"),
        ("/a/b/%2E%2E/c", "/a/c"),
        ("/a/b/%2e%2e/c", "/a/c"),
        ("/A/B/C", "/A/B/C"),
        ("/a/%2F%2f/c", "/a/%2F%2f/c"),
        ("/xyz", "/xyz"),
        ("/x/y/z", "/x/y/z"),
    ] {
        assert_eq!(canon(input).as_deref(), Some(expected), "{input}");
    }
}

#[test]
fn canonicalization_details() {
    for (input, expected) in [
        ("", "/"),
        ("/", "/"),
        ("/..", "/"),
        ("/../a", "/a"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/./", "/a/"),
        ("/.hidden/..x/x..", "/.hidden/..x/x.."),
        ("/a.b/c.", "/a.b/c."),
        ("/a/%2e/b", "/a/b"),
        ("/a/.%2E/b", "/b"),
        // Unreserved characters are decoded, others kept as they came.
        ("/%41%62%7e%2D%5f%30", "/Ab~-_0"),
        ("/%20%3f%23%25%2f", "/%20%3f%23%25%2f"),
        // Bytes that may not be in a path are escaped.
        ("/a b\"<>^`{|}", "/a%20b%22%3C%3E%5E%60%7B%7C%7D"),
        ("/\u{e9}", "/%C3%A9"),
        ("/a\\b", "/a/b"),
        // Kept: sub-delims, ':' and '@', brackets.
        ("/!$&'()*+,;=:@[]", "/!$&'()*+,;=:@[]"),
        // Slashes are not merged by canonicalization.
        ("/a//b", "/a//b"),
        // A lone '%' stays; one that would read as an escape once its
        // neighbours are decoded is written %25.
        ("/100%", "/100%"),
        ("/%zz", "/%zz"),
        ("/%%30%30", "/%2500"),
        ("/%%32F", "/%252F"),
    ] {
        assert_eq!(canon(input).as_deref(), Some(expected), "{input}");
    }
}

/// Envoy's InvalidPaths: a NUL, escaped or not, fails the path.
#[test]
fn nul_fails_canonicalization() {
    for input in ["/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc", "/a\0b"] {
        assert_eq!(canon(input), None, "{input:?}");
    }
}

/// Envoy's MergeSlashes cases.
#[test]
fn merges_slashes_as_envoy() {
    let merge = |p: &str| match merge_slashes(p.as_bytes()) {
        Some(m) => String::from_utf8(m).unwrap(),
        None => p.to_string(),
    };
    for (input, expected) in [
        ("", ""),
        ("a//b/c", "a/b/c"),
        ("/a//b/c/", "/a/b/c/"),
        ("a//b/c/", "a/b/c/"),
        ("/a", "/a"),
        ("//a/b/c", "/a/b/c"),
        ("/a//b/c", "/a/b/c"),
        ("/a/b/c//", "/a/b/c/"),
        ("/a///b/c", "/a/b/c"),
        ("/a////b/c", "/a/b/c"),
        // Envoy rebuilds the path from its segments: all slashes stay two.
        ("//", "//"),
        ("////", "//"),
    ] {
        assert_eq!(merge(input), expected, "{input}");
    }
    // The query is not the path's.
    let o = opts(false, true, EscapedSlashes::KeepUnchanged);
    assert_eq!(run("/a//b?a=///c", o), rewritten("/a/b?a=///c"));
    assert_eq!(run("/a//b?", o), rewritten("/a/b?"));
    assert_eq!(run("//a/?b", o), rewritten("/a/?b"));
}

/// Envoy's UnescapeSlashes cases.
#[test]
fn unescapes_slashes_as_envoy() {
    let unescape = |p: &str| match unescape_slashes(p.as_bytes()) {
        Some(u) => String::from_utf8(u).unwrap(),
        None => p.to_string(),
    };
    for (input, expected) in [
        ("", ""),
        ("%2f%2F", "//"),
        ("/a%2Fb%2fc/", "/a/b/c/"),
        ("%2b", "%2b"),
        ("%2", "%2"),
        ("%", "%"),
        ("/abc%2", "/abc%2"),
        ("/a%2F", "/a/"),
        ("%5c%5C", "\\\\"),
        ("/a%2Fb%3Ac/d", "/a/b%3Ac/d"),
        ("%%2F2F", "%/2F"),
    ] {
        assert_eq!(unescape(input), expected, "{input}");
    }
}

#[test]
fn escaped_slash_actions() {
    let t = "/a%2Fb%5cc?q=%2F";
    assert_eq!(run(t, opts(false, false, EscapedSlashes::KeepUnchanged)), Outcome::Unchanged);
    assert_eq!(run(t, opts(false, false, EscapedSlashes::RejectRequest)), Outcome::Reject);
    assert_eq!(run(t, opts(false, false, EscapedSlashes::UnescapeAndForward)), rewritten("/a/b\\c?q=%2F"));
    assert_eq!(
        run(t, opts(false, false, EscapedSlashes::UnescapeAndRedirect)),
        Outcome::Redirect(b"/a/b\\c?q=%2F".to_vec())
    );
    // Unescaped before normalization: the redirect goes to the final path.
    assert_eq!(
        run("/a%2F..%2Fb%5C%2F/c", opts(true, true, EscapedSlashes::UnescapeAndRedirect)),
        Outcome::Redirect(b"/b/c".to_vec())
    );
    // Nothing to unescape: no redirect, whatever else changes.
    assert_eq!(run("/a/../b", opts(true, false, EscapedSlashes::UnescapeAndRedirect)), rewritten("/b"));
    assert_eq!(run("/a/b", opts(true, true, EscapedSlashes::RejectRequest)), Outcome::Unchanged);
    // The query may carry them under every action.
    assert_eq!(run("/a?x=%2f", opts(false, false, EscapedSlashes::RejectRequest)), Outcome::Unchanged);
}

#[test]
fn normalize_leaves_other_targets_and_the_query() {
    let all = opts(true, true, EscapedSlashes::UnescapeAndForward);
    assert_eq!(run("*", all), Outcome::Unchanged);
    assert_eq!(run("example.com:443", all), Outcome::Unchanged);
    assert_eq!(run("/a/../b?x=/../..//%41", all), rewritten("/b?x=/../..//%41"));
    assert_eq!(run("/a/%00?x", all), Outcome::Reject);
    assert_eq!(run("/a/../b", PathNormalization::OFF), Outcome::Unchanged);
}

fn any_opts() -> impl Strategy<Value = PathNormalization> {
    let action = prop_oneof![
        Just(EscapedSlashes::KeepUnchanged),
        Just(EscapedSlashes::RejectRequest),
        Just(EscapedSlashes::UnescapeAndRedirect),
        Just(EscapedSlashes::UnescapeAndForward),
    ];
    (any::<bool>(), any::<bool>(), action).prop_map(|(n, m, e)| opts(n, m, e))
}

/// Paths built from the bytes that matter here, and any byte now and then.
fn any_target() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"/".to_vec()),
        Just(b"\\".to_vec()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"%".to_vec()),
        Just(b"%2e".to_vec()),
        Just(b"%2E".to_vec()),
        Just(b"%2f".to_vec()),
        Just(b"%2F".to_vec()),
        Just(b"%5c".to_vec()),
        Just(b"%25".to_vec()),
        Just(b"%30".to_vec()),
        Just(b"%41".to_vec()),
        Just(b"2".to_vec()),
        Just(b"F".to_vec()),
        Just(b"a".to_vec()),
        Just(b"?".to_vec()),
        Just(b" ".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| {
        let mut t = b"/".to_vec();
        t.extend(v.concat());
        t
    })
}

proptest! {
    #[test]
    fn canonicalization_is_idempotent(path in any_target()) {
        if let Some(once) = canonicalize(&path) {
            prop_assert_eq!(once.first(), Some(&b'/'));
            prop_assert_eq!(canonicalize(&once), Some(once.clone()));
        }
    }

    #[test]
    fn normalizing_twice_is_normalizing_once(target in any_target(), o in any_opts()) {
        let once = match normalize(&target, &o) {
            Outcome::Reject => return Ok(()),
            Outcome::Unchanged => target.clone(),
            Outcome::Rewritten(t) | Outcome::Redirect(t) => t,
        };
        prop_assert_eq!(once.first(), Some(&b'/'));
        let path = once.split(|&b| b == b'?').next().unwrap_or_default();
        if !(o.normalize && has_dot_segment_parameters(path)) {
            prop_assert_eq!(normalize(&once, &o), Outcome::Unchanged, "{:?} -> {:?}", String::from_utf8_lossy(&target), String::from_utf8_lossy(&once));
        }
    }
}

#[test]
fn apply_rewrites_the_target_or_answers() {
    let forward = opts(true, true, EscapedSlashes::UnescapeAndForward);
    // An HTTP/2 request's URI keeps its scheme and authority.
    let mut h2 = RequestHeader::build("GET", b"/", None).unwrap();
    h2.set_uri(http::Uri::from_static("http://films.example/a/..//b%2Fc?q=%2F"));
    assert_eq!(apply(&mut h2, &forward, false), None);
    assert_eq!(h2.uri.to_string(), "http://films.example/b/c?q=%2F");
    let mut h1 = RequestHeader::build("GET", b"/a/./b", None).unwrap();
    assert_eq!(apply(&mut h1, &forward, false), None);
    assert_eq!(h1.raw_path(), b"/a/b");

    let redirect = opts(false, false, EscapedSlashes::UnescapeAndRedirect);
    let mut req = RequestHeader::build("GET", b"/x%2Fy?q", None).unwrap();
    assert_eq!(
        apply(&mut req, &redirect, false),
        Some(LocalReply::NormalizedPathRedirect { location: "/x/y?q".to_string() })
    );
    // gRPC cannot follow a redirect: 400, as Envoy.
    assert_eq!(apply(&mut req, &redirect, true), Some(LocalReply::PathNormalizationFailed));
    let mut nul = RequestHeader::build("GET", b"/a%00", None).unwrap();
    assert_eq!(apply(&mut nul, &forward, false), Some(LocalReply::PathNormalizationFailed));
    assert_eq!(nul.raw_path(), b"/a%00", "a refused target is left as it came");
}

/// Envoy's `StripDotSegmentWithParameters` cases.
#[test]
fn dot_segments_lose_their_parameters() {
    let strip = |p: &str| strip_dot_segment_parameters(p.as_bytes()).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(strip(""), None);
    assert_eq!(strip("/xyz"), None);
    assert_eq!(strip("/xyz/..;foo=bar/abc").as_deref(), Some("/xyz/../abc"));
    assert_eq!(strip("/..;foo=bar/abc").as_deref(), Some("/../abc"));
    assert_eq!(strip("/xyz/..;foo=bar").as_deref(), Some("/xyz/.."));
    assert_eq!(strip("/xyz/..;").as_deref(), Some("/xyz/.."));
    assert_eq!(strip("/a/..;foo/b/..;bar/c").as_deref(), Some("/a/../b/../c"));
    assert_eq!(strip("/a/..;param1;param2/b").as_deref(), Some("/a/../b"));
    assert_eq!(strip("/xyz/..foo"), None);
    assert_eq!(strip("/xyz/...;foo"), None);
    assert_eq!(strip("/xyz/remove/..;foo#frag=/.;foo").as_deref(), Some("/xyz/remove/..#frag=/.;foo"));
    assert_eq!(strip("/xyz#frag=/..;foo"), None);
    assert_eq!(strip("/xyz/.;foo=bar/abc").as_deref(), Some("/xyz/./abc"));
    assert_eq!(strip("/.;foo=bar/abc").as_deref(), Some("/./abc"));
    assert_eq!(strip("/xyz/.;").as_deref(), Some("/xyz/."));
    assert_eq!(strip("/a/.;param1;param2/b").as_deref(), Some("/a/./b"));
    assert_eq!(strip("/xyz/.foo"), None);
}

/// Envoy's `NormalizeValidPaths` cases for dot segments with parameters.
#[test]
fn normalize_path_resolves_dot_segments_with_parameters() {
    let o = opts(true, false, EscapedSlashes::KeepUnchanged);
    for (from, to) in [
        ("/xyz/..;foo=bar/abc", "/abc"),
        ("/..;foo=bar/abc", "/abc"),
        ("/xyz/..;foo=bar", "/"),
        ("/xyz/.;foo=bar/abc", "/xyz/abc"),
        ("/.;foo=bar/abc", "/abc"),
        ("/xyz/.;foo=bar", "/xyz/"),
        ("/xyz/..;foo=bar/.;v1=2,v2=3/abc", "/abc"),
        ("/..;foo=bar/abc/.;mmm", "/abc/"),
        ("/.;aaa/..;foo=bar/abc/.;mmm", "/abc/"),
        ("/xyz/..;foo=bar/.;fff=zzz", "/"),
        ("/xyz/..;foo=bar/.;fff=zzz?blah=woops", "/?blah=woops"),
        ("/xyz/..;foo=bar/.;fff=zzz/remain;blah-bluh?query", "/remain;blah-bluh?query"),
        ("/public/..;/admin", "/admin"),
    ] {
        assert_eq!(normalize(from.as_bytes(), &o), Outcome::Rewritten(to.as_bytes().to_vec()), "{from}");
    }
    // Without normalize_path they stay as written.
    let off = opts(false, true, EscapedSlashes::KeepUnchanged);
    assert_eq!(normalize(b"/public/..;/admin", &off), Outcome::Unchanged);
}

/// Found by the libFuzzer target: a bare `%` that `..` removed must not
/// make a later unrelated escape look nested (the output was
/// `/%/a/b%6250A%7/%DE`, and a second pass changed it again).
#[test]
fn a_bare_percent_removed_by_dot_dot_is_forgotten() {
    let input = b"/%/a/%2%%215./..\\b`%41%7/\xde";
    let once = canonicalize(input).unwrap();
    assert_eq!(once, b"/%/a/b%60A%7/%DE".to_vec(), "{}", String::from_utf8_lossy(&once));
    assert_eq!(canonicalize(&once), Some(once.clone()));
}
