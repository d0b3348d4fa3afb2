//! `SDK-HMAC-SHA256` request signing, as the official Huawei Cloud SDKs do it
//! (docs/design.md, "The API as the daemon uses it"), and its verification for the simulator.
//!
//! The canonical query string is also the query sent on the wire, so what is signed is
//! exactly what the gateway sees.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

/// The algorithm name at the start of the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// The date header the signature covers.
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// `%Y%m%dT%H%M%SZ`, the format of `X-Sdk-Date`.
const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// SHA-256 of the empty string: the payload hash of a request without a body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Formats an instant as `X-Sdk-Date`.
pub fn format_sdk_date(t: DateTime<Utc>) -> String {
    t.format(DATE_FORMAT).to_string()
}

/// Parses an `X-Sdk-Date` value.
pub fn parse_sdk_date(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, DATE_FORMAT)
        .ok()
        .map(|n| n.and_utc())
}

/// Percent-encodes with RFC 3986 rules: `A-Z a-z 0-9 - _ . ~` stay, every other byte of
/// the UTF-8 form becomes `%XX` with uppercase hex.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0f) as usize] as char);
        }
    }
    out
}

/// The canonical URI: the path percent-decoded, each segment re-encoded, and a `/`
/// appended when it does not already end in one.
pub fn canonical_uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&encode(&percent_decode_str(seg).decode_utf8_lossy()));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query string: pairs sorted by raw key then value, both encoded, joined
/// with `&`; empty when there are no pairs. Also the query to send.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    pairs.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Splits a raw query string as received (`a=1&b=%20`) into decoded pairs. `+` is kept
/// literally: the signer encodes a space as `%20`.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

/// Canonical header block and signed-header list for the given headers: every header whose
/// name has no `_`, lower-cased, sorted, value trimmed.
pub fn canonical_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> (String, String) {
    let mut hs: Vec<(String, &str)> = headers
        .iter()
        .filter(|(k, _)| !k.as_ref().contains('_'))
        .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().trim()))
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut block = String::new();
    let mut signed = String::new();
    for (i, (k, v)) in hs.iter().enumerate() {
        block.push_str(k);
        block.push(':');
        block.push_str(v);
        block.push('\n');
        if i > 0 {
            signed.push(';');
        }
        signed.push_str(k);
    }
    (block, signed)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Lowercase hex HMAC-SHA256 with the secret key's UTF-8 bytes as the key.
pub fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// The pieces of one signature, kept for tests and debugging (no secret among them).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Signed {
    /// The canonical request that was hashed.
    pub canonical_request: String,
    /// The string that was signed.
    pub string_to_sign: String,
    /// `;`-joined lower-case names of the signed headers.
    pub signed_headers: String,
    /// Lowercase hex signature.
    pub signature: String,
    /// The full `Authorization` header value.
    pub authorization: String,
    /// The canonical query string, which is also the one to send.
    pub query: String,
}

/// One request to sign. `headers` must already hold `Host` and `X-Sdk-Date` and every other
/// header to be signed; the `Authorization` header is not among them.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The path as sent, without the query.
    pub path: &'a str,
    /// Query parameters, decoded.
    pub query: &'a [(String, String)],
    /// Headers to sign.
    pub headers: &'a [(String, String)],
    /// The exact body bytes sent.
    pub body: &'a [u8],
}

/// Signs a request with an access key and secret key.
pub fn sign(access_key: &str, secret_key: &[u8], req: &Request<'_>) -> Signed {
    let date = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(DATE_HEADER))
        .map(|(_, v)| v.trim())
        .unwrap_or_default();
    let query = canonical_query(req.query);
    let (block, signed_headers) = canonical_headers(req.headers);
    let payload_hash = if req.body.is_empty() {
        EMPTY_SHA256.to_owned()
    } else {
        sha256_hex(req.body)
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        query,
        block,
        signed_headers,
        payload_hash
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hmac_hex(secret_key, string_to_sign.as_bytes());
    let authorization = format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    );
    Signed {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
        query,
    }
}

/// A parsed `Authorization: SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key.
    pub access: String,
    /// Lower-case names of the signed headers.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

/// Parses an `Authorization` header value; `None` when it is not `SDK-HMAC-SHA256`.
pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut access, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access = Some(v.to_owned()),
            "SignedHeaders" => signed = Some(v.split(';').map(str::to_owned).collect()),
            "Signature" => sig = Some(v.to_owned()),
            _ => return None,
        }
    }
    Some(Authorization {
        access: access.filter(|a: &String| !a.is_empty())?,
        signed_headers: signed?,
        signature: sig?,
    })
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No or malformed `Authorization` header.
    #[error("missing or malformed Authorization header")]
    Malformed,
    /// `X-Sdk-Date` missing, malformed, or further than the allowed skew from now.
    #[error("X-Sdk-Date missing, malformed or expired")]
    Date,
    /// A header listed in SignedHeaders is absent, or `host`/`x-sdk-date` is not signed.
    #[error("signed header {0} missing from the request")]
    MissingHeader(String),
    /// The access key is unknown.
    #[error("unknown access key")]
    UnknownKey,
    /// The signature does not match.
    #[error("signature mismatch")]
    Mismatch,
}

/// Verifies a received request. `header` looks a header up by lower-case name;
/// `secret_for` gives the secret key of an access key. Returns the access key.
// Each argument is one independent part of the received request or of the policy.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    method: &str,
    path: &str,
    raw_query: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew: chrono::Duration,
    secret_for: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<String, VerifyError> {
    let auth = header("authorization")
        .as_deref()
        .and_then(parse_authorization)
        .ok_or(VerifyError::Malformed)?;
    for required in ["host", "x-sdk-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(VerifyError::MissingHeader(required.to_owned()));
        }
    }
    let date = header("x-sdk-date")
        .as_deref()
        .and_then(parse_sdk_date)
        .ok_or(VerifyError::Date)?;
    if (now - date).abs() > max_skew {
        return Err(VerifyError::Date);
    }
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let v = header(name).ok_or_else(|| VerifyError::MissingHeader(name.clone()))?;
        headers.push((name.clone(), v));
    }
    let sk = secret_for(&auth.access).ok_or(VerifyError::UnknownKey)?;
    let query = parse_query(raw_query);
    let signed = sign(
        &auth.access,
        &sk,
        &Request {
            method,
            path,
            query: &query,
            headers: &headers,
            body,
        },
    );
    if constant_time_eq(signed.signature.as_bytes(), auth.signature.as_bytes()) {
        Ok(auth.access)
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AK: &str = "AKTESTEXAMPLE";
    const SK: &[u8] = b"SKTESTEXAMPLESECRET";
    const DATE: &str = "20261127T120000Z";
    const HOST: &str = "vpcep.cn-north-4.myhuaweicloud.com";
    const PROJECT: &str = "0605767a3300d5762fb7c0186d8bfc2b";

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn vpcep_headers(content_type: &str, ua: Option<&str>) -> Vec<(String, String)> {
        let mut v = h(&[
            ("Content-Type", content_type),
            ("X-Project-Id", PROJECT),
            ("X-Sdk-Date", DATE),
            ("Host", HOST),
        ]);
        if let Some(ua) = ua {
            v.push(("User-Agent".into(), ua.into()));
        }
        v
    }

    fn list_query() -> Vec<(String, String)> {
        h(&[
            ("status", "pendingAcceptance"),
            ("limit", "2"),
            ("offset", "0"),
        ])
    }

    /// Every vector of tests/fixtures/signing-vectors.json: the request it describes,
    /// signed, gives each value the vector lists.
    #[test]
    fn signing_vectors() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/signing-vectors.json"))
                .expect("the vectors are JSON");
        let vectors = doc["vectors"].as_array().expect("a list of vectors");
        assert_eq!(vectors.len(), 6);
        for v in vectors {
            let name = v["name"].as_str().expect("a name");
            let text = |key: &str| v.get(key).map(|x| x.as_str().expect("a string"));
            let pairs = |key: &str| -> Vec<(String, String)> {
                serde_json::from_value(v[key].clone()).expect("a list of pairs")
            };
            let body = text("body").expect("a body").as_bytes();
            let s = sign(
                text("access_key").unwrap_or(AK),
                text("secret_key").map_or(SK, str::as_bytes),
                &Request {
                    method: text("method").expect("a method"),
                    path: text("path").expect("a path"),
                    query: &pairs("query"),
                    headers: &pairs("headers"),
                    body,
                },
            );
            if let Some(n) = v.get("body_len") {
                assert_eq!(Some(body.len() as u64), n.as_u64(), "{name}: body length");
            }
            let mut got = serde_json::to_value(&s).expect("serialises");
            got["body_sha256"] = sha256_hex(body).into();
            got["canonical_request_sha256"] = sha256_hex(s.canonical_request.as_bytes()).into();
            let expect = v["expect"].as_object().expect("expected values");
            for (key, want) in expect {
                assert_eq!(got.get(key), Some(want), "{name}: {key}");
            }
            if let Some(start) = text("canonical_request_starts_with") {
                assert!(s.canonical_request.starts_with(start), "{name}: {s:?}");
            }
            if let Some(end) = text("string_to_sign_ends_with") {
                assert!(s.string_to_sign.ends_with(end), "{name}: {s:?}");
            }
        }
    }

    #[test]
    fn headers_with_underscore_are_not_signed_and_values_trimmed() {
        let (block, signed) =
            canonical_headers(&h(&[("X_Custom", "x"), ("B", "  two "), ("a", "one")]));
        assert_eq!(block, "a:one\nb:two\n");
        assert_eq!(signed, "a;b");
    }

    #[test]
    fn odd_paths_and_queries() {
        assert_eq!(canonical_uri("/a b/c%2Fd/"), "/a%20b/c%2Fd/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/ü"), "/%C3%BC/");
        assert_eq!(
            canonical_query(&h(&[("b", "2"), ("a", "x y+z"), ("a", "1"), ("k", "")])),
            "a=1&a=x%20y%2Bz&b=2&k="
        );
    }

    #[test]
    fn sdk_date_round_trip_and_authorization_parse() {
        let t = parse_sdk_date(DATE).expect("date");
        assert_eq!(format_sdk_date(t), DATE);
        assert!(parse_sdk_date("2026-11-27").is_none());
        let a = parse_authorization(
            "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=ab",
        )
        .expect("parse");
        assert_eq!(a.access, "AK");
        assert_eq!(a.signed_headers, vec!["host", "x-sdk-date"]);
        assert!(parse_authorization("AWS4-HMAC-SHA256 Access=AK").is_none());
        assert!(
            parse_authorization("SDK-HMAC-SHA256 Access=, SignedHeaders=h, Signature=s").is_none()
        );
    }

    fn verify_signed(
        path: &str,
        query: &[(String, String)],
        body: &[u8],
        tamper: impl Fn(&mut Vec<(String, String)>),
    ) -> Result<String, VerifyError> {
        let mut headers = vpcep_headers("application/json", None);
        let s = sign(
            AK,
            SK,
            &Request {
                method: "POST",
                path,
                query,
                headers: &headers,
                body,
            },
        );
        headers.push(("Authorization".into(), s.authorization));
        tamper(&mut headers);
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        verify(
            "POST",
            path,
            &s.query,
            lookup,
            body,
            parse_sdk_date(DATE).expect("date"),
            chrono::Duration::minutes(15),
            |ak| (ak == AK).then(|| SK.to_vec()),
        )
    }

    #[test]
    fn verify_accepts_good_and_rejects_tampered() {
        let q = list_query();
        assert_eq!(
            verify_signed("/v1/p/x", &q, b"{}", |_| {}).as_deref(),
            Ok(AK)
        );
        assert_eq!(
            verify_signed("/v1/p/x", &q, b"{}", |h| h[1].1.push('0')),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_signed("/v1/p/x", &q, b"{}", |h| h
                .retain(|(k, _)| k != "X-Project-Id")),
            Err(VerifyError::MissingHeader("x-project-id".into()))
        );
    }

    proptest! {
        #[test]
        fn encode_output_is_unreserved_or_escapes(s in any::<String>()) {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            prop_assert_eq!(percent_decode_str(&e).decode_utf8_lossy(), s.as_str());
        }

        #[test]
        fn canonical_uri_ends_in_slash_and_is_stable(segs in proptest::collection::vec("[^/]{0,12}", 0..5)) {
            let path = format!("/{}", segs.join("/"));
            let c = canonical_uri(&path);
            prop_assert!(c.ends_with('/'));
            prop_assert_eq!(canonical_uri(&c), c.clone());
        }

        #[test]
        fn wire_query_round_trips_through_verification(
            path_seg in "[ -~]{1,20}",
            pairs in proptest::collection::vec(("[a-z_]{1,8}", any::<String>()), 0..5),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let path = format!("/v1/{}", encode(&path_seg));
            prop_assert_eq!(verify_signed(&path, &pairs, &body, |_| {}), Ok(AK.to_owned()));
            prop_assert_eq!(parse_query(&canonical_query(&pairs)).len(), pairs.len());
        }
    }
}
