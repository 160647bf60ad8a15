//! Parts of a TLS context's `validation_context` that check a peer's
//! certificate: CAs and revocation lists from an SDS secret
//! (`validation_context_sds_secret_config`), the context's own `crl` lists,
//! subject alternative name matchers, and certificate pins (on clusters
//! only). `tls.rs` reads the rest, inline `trusted_ca` among it.

use super::secret::{sds_secret_config, Kind, SecretRef};
use super::{Ctx, DataSourceValue, P};
use crate::config::raw;
use crate::routing::StringMatch;
use crate::tls::{RevocationLists, SanMatcher, SanPattern, SanType, Secret, TrustedCa};

/// A `validation_context_sds_secret_config`: the CAs, fixed (a static
/// secret, whose lists are read now) or followed in an SDS file (whose
/// lists come with its CAs).
pub(super) fn validation_secret(
    cx: &mut Ctx,
    sp: &P,
    sc: &raw::SdsSecretConfig,
) -> Option<(TrustedCa, Option<RevocationLists>)> {
    match sds_secret_config(cx, sp, sc, Kind::Validation)? {
        SecretRef::Static(Secret::Validation(v)) => {
            let crl = match &v.crl {
                Some(source) => match crate::tls::load_crls(source, v.crl_leaf_only) {
                    Ok(lists) => Some(lists),
                    Err(e) => {
                        cx.error(&sp.key("name"), format!("the secret's crl: {e}"));
                        return None;
                    }
                },
                // The rule still applies to lists bundled in `trusted_ca`.
                None => Some(RevocationLists { der: Vec::new(), leaf_only: v.crl_leaf_only }),
            };
            Some((TrustedCa::Pem(v.trusted_ca), crl))
        }
        SecretRef::File(file) => Some((TrustedCa::Sds(file), None)),
        SecretRef::Static(Secret::Certificate(_)) => None,
    }
}

/// `crl` and `only_verify_leaf_cert_crl` of a validation context: `Some(None)` without lists, `None` when they did not load
/// (an error is reported at their path). The lists are read here, so a
/// file that does not parse fails `--mode validate` too.
pub(super) fn revocation_lists(cx: &mut Ctx, vp: &P, vc: &raw::ValidationContext) -> Option<Option<RevocationLists>> {
    // Without `crl` it still rules the lists a `trusted_ca` file bundles
    // (Envoy's `parseCaCertList` reads them; see `tls::load_ca_bundle`):
    // kept as empty lists, which check nothing when the file has none.
    let leaf_only = cx.boolean(vp, "only_verify_leaf_cert_crl", &vc.only_verify_leaf_cert_crl, false);
    let Some(ds) = cx.opt(vp, "crl", &vc.crl) else {
        return Some(leaf_only.then(|| RevocationLists { der: Vec::new(), leaf_only }));
    };
    let cp = vp.key("crl");
    let (pem, at) = match cx.data_source(&cp, ds)? {
        DataSourceValue::File(f) => match std::fs::read(&f) {
            Ok(b) => (b, cp.key("filename")),
            Err(e) => {
                cx.error(&cp.key("filename"), format!("cannot read {f}: {e}"));
                return None;
            }
        },
        DataSourceValue::Inline(b) => {
            let key = if ds.inline_string.is_some() { "inline_string" } else { "inline_bytes" };
            (b, cp.key(key))
        }
    };
    match crate::tls::parse_crls(&pem) {
        Ok(der) => Some(Some(RevocationLists { der, leaf_only })),
        Err(why) => {
            cx.error(&at, why);
            None
        }
    }
}

/// A validation context's name checks: `match_typed_subject_alt_names`, or
/// the deprecated `match_subject_alt_names`, whose matchers take a name of
/// any type (DNS, URI, email, IP), as Envoy reads them.
pub(super) fn subject_alt_name_matchers(cx: &mut Ctx, vp: &P, vc: &raw::ValidationContext) -> Vec<SanMatcher> {
    let mut out = Vec::new();
    for (mp, m) in cx.list(vp, "match_typed_subject_alt_names", &vc.match_typed_subject_alt_names) {
        cx.other(&mp, m, &[]);
        let san_type = cx.enumeration(
            &mp,
            "san_type",
            &m.san_type,
            &[
                ("DNS", Some(SanType::Dns)),
                ("URI", Some(SanType::Uri)),
                ("EMAIL", Some(SanType::Email)),
                ("IP_ADDRESS", Some(SanType::IpAddress)),
                ("SAN_TYPE_UNSPECIFIED", None),
            ],
            None,
        );
        if san_type.is_none() {
            cx.error(&mp.key("san_type"), "required: DNS, URI, EMAIL or IP_ADDRESS");
        }
        let pattern = cx.req(&mp, "matcher", &m.matcher).and_then(|sm| san_pattern(cx, &mp.key("matcher"), sm));
        if let (Some(san_type), Some(pattern)) = (san_type, pattern) {
            out.push(SanMatcher { san_type, pattern });
        }
    }
    let untyped = cx.list(vp, "match_subject_alt_names", &vc.match_subject_alt_names);
    if !untyped.is_empty() && vc.match_typed_subject_alt_names.is_some() {
        cx.error(
            &vp.key("match_subject_alt_names"),
            "only one of `match_subject_alt_names` (deprecated) and `match_typed_subject_alt_names` may be set",
        );
    }
    for (mp, sm) in untyped {
        if let Some(pattern) = san_pattern(cx, &mp, sm) {
            for san_type in [SanType::Dns, SanType::Uri, SanType::Email, SanType::IpAddress] {
                out.push(SanMatcher { san_type, pattern: pattern.clone() });
            }
        }
    }
    out
}

fn san_pattern(cx: &mut Ctx, p: &P, sm: &raw::StringMatcher) -> Option<SanPattern> {
    super::route::string_matcher(cx, p, sm).map(|sm| match sm {
        StringMatch::Exact(v, ic) => SanPattern::Exact(v, ic),
        StringMatch::Prefix(v, ic) => SanPattern::Prefix(v, ic),
        StringMatch::Suffix(v, ic) => SanPattern::Suffix(v, ic),
        StringMatch::Contains(v, ic) => SanPattern::Contains(v, ic),
        StringMatch::Regex(re) => SanPattern::Regex(re),
    })
}

/// `verify_certificate_hash` / `verify_certificate_spki`: SHA-256 values,
/// each read by `parse` (an entry it cannot read is an error naming it).
pub(super) fn pins(
    cx: &mut Ctx,
    vp: &P,
    name: &str,
    list: &Option<raw::List<String>>,
    parse: fn(&str) -> Option<[u8; 32]>,
) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for (ip, entry) in cx.list(vp, name, list) {
        match parse(entry) {
            Some(h) => out.push(h),
            None if name == "verify_certificate_hash" => cx.error(
                &ip,
                "expected a SHA-256 certificate hash in hex (64 digits, optionally in colon-separated pairs)",
            ),
            None => cx.error(&ip, "expected a base64 SHA-256 hash of the SubjectPublicKeyInfo (44 characters)"),
        }
    }
    out
}

/// A hex SHA-256 as Envoy reads `verify_certificate_hash`: 64 hex digits,
/// or 32 pairs of them joined by colons (95 characters, the fingerprint
/// `openssl x509 -fingerprint` prints). Only hex digits count: a sign or a
/// space, which a lenient number parser would take, makes it no hash.
pub(super) fn hex_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    let digits: Vec<u8> = match bytes.len() {
        64 => bytes.to_vec(),
        95 => {
            let pairs: Vec<&[u8]> = bytes.split(|b| *b == b':').collect();
            if pairs.len() != 32 || pairs.iter().any(|p| p.len() != 2) {
                return None;
            }
            pairs.concat()
        }
        _ => return None,
    };
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A base64 SHA-256 (`verify_certificate_spki`).
pub(super) fn base64_sha256(text: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_hashes_read_as_envoy_writes_them() {
        let plain = "df6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a";
        let colons = "DF:6F:F7:2F:E9:11:65:21:26:8F:6F:2D:D4:96:6F:51:DF:47:98:83:FE:70:37:B3:9F:75:91:6A:C3:04:9D:1A";
        assert_eq!(hex_sha256(plain), hex_sha256(colons));
        assert_eq!(hex_sha256(plain).map(|h| h[0]), Some(0xdf));
        assert_eq!(hex_sha256(&plain[2..]), None, "too short");
        assert_eq!(hex_sha256(&format!("{plain}00")), None, "too long");
        assert_eq!(hex_sha256(&format!(":{}", &plain[1..])), None);
        assert_eq!(hex_sha256(&plain.replace('d', "g")), None, "not hex");
        // `u8::from_str_radix` (and C's strtoul) take a sign or a space.
        assert_eq!(hex_sha256(&format!("+f{}", &plain[2..])), None, "a sign is not a digit");
        assert_eq!(hex_sha256(&format!(" f{}", &plain[2..])), None);
        assert_eq!(hex_sha256(&colons.replacen("DF", "+F", 1)), None);
        assert_eq!(hex_sha256(&colons.replacen(":", "", 1)), None, "pairs or none");
        assert_eq!(hex_sha256(&format!("{}:{}", &plain[..1], &plain[1..])), None, "a colon inside a pair");
        assert_eq!(hex_sha256(&colons.replace(':', "-")), None);
        assert!(base64_sha256("NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=").is_some());
        assert_eq!(base64_sha256("AAAA"), None, "not 32 bytes");
    }
}
