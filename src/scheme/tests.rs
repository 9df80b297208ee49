//! Scheme tests: round trips through the signer, tampering, detection rules, and
//! proptests that no parser or canonicaliser panics on arbitrary input.

#![allow(clippy::indexing_slicing)]

use proptest::prelude::*;

use super::*;
use crate::sign::{SignOptions, SignRequest, sign};
use crate::testkit::received;

const NOW: i64 = 1_700_000_000_123;
const SECRET: &[u8] = b"round-trip-secret";

fn cfg() -> SchemeConfig {
    SchemeConfig::default()
}

fn api() -> ApiSchemeOptions {
    ApiSchemeOptions::default()
}

fn opts<'a>(scheme: SchemeKind, key: &'a str) -> SignOptions<'a> {
    SignOptions::new(
        scheme,
        key,
        SECRET,
        NOW,
        "3b1f6c2e-5a0d-4c8e-9a77-3e2f1d0c9b8a",
    )
}

fn req(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> SignRequest {
    SignRequest {
        method: method.to_owned(),
        url: url.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.map(<[u8]>::to_vec),
    }
}

/// Signs, then runs the whole check sequence; returns the view and the credential.
fn round_trip(r: &SignRequest, o: &SignOptions<'_>) -> (RequestView, Credential) {
    let signed = sign(r, o).unwrap();
    let v = received(r, &signed);
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), o.scheme);
    c.verify(&v, &cfg(), &api(), o.secret).unwrap();
    c.check_fresh(&cfg(), &api(), NOW + 1000).unwrap();
    (v, c)
}

fn verify_code(v: &RequestView, secret: &[u8]) -> Option<DenyCode> {
    match detect(v) {
        Err(d) => Some(d.code),
        Ok(c) => c.verify(v, &cfg(), &api(), secret).err().map(|d| d.code),
    }
}

fn body_code(v: &RequestView) -> Option<DenyCode> {
    detect(v).unwrap().check_body(v).err().map(|d| d.code)
}

fn flip_last(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let last = b.last_mut().unwrap();
    *last = if *last == b'1' { b'2' } else { b'1' };
    String::from_utf8(b).unwrap()
}

fn set_header(v: &mut RequestView, name: &str, value: &str) {
    let mut h = crate::request::Headers::new();
    for (n, val) in v.headers.iter() {
        h.push(n, if n == name { value } else { val });
    }
    v.headers = h;
}

/// Flips one byte of the path, the query, one signed header and the body; each must be
/// caught with the stated code (`None` = the scheme does not cover that part).
fn tamper(
    v: &RequestView,
    header: Option<&str>,
    body_verify: Option<DenyCode>,
    body_check: Option<DenyCode>,
) {
    let mut t = v.clone();
    t.path = flip_last(&t.path);
    assert_eq!(
        verify_code(&t, SECRET),
        Some(DenyCode::SignatureMismatch),
        "path"
    );
    if let Some(q) = &v.query {
        let mut t = v.clone();
        t.query = Some(q.replacen("x=1", "x=2", 1));
        assert_ne!(t.query, v.query);
        assert_eq!(
            verify_code(&t, SECRET),
            Some(DenyCode::SignatureMismatch),
            "query"
        );
    }
    if let Some(h) = header {
        let mut t = v.clone();
        let old = t.headers.get(h).unwrap().to_owned();
        set_header(&mut t, h, &flip_last(&old));
        assert_eq!(
            verify_code(&t, SECRET),
            Some(DenyCode::SignatureMismatch),
            "header {h}"
        );
    }
    if let Some(body) = &v.body {
        let mut t = v.clone();
        let mut b = body.clone();
        let last = b.last_mut().unwrap();
        *last ^= 1;
        t.body = Some(b);
        assert_eq!(verify_code(&t, SECRET), body_verify, "body (verify)");
        if body_verify.is_none() {
            assert_eq!(body_code(&t), body_check, "body (check_body)");
        }
    }
    assert_eq!(
        verify_code(v, b"another-secret"),
        Some(DenyCode::SignatureMismatch),
        "secret"
    );
}

// === Round trips ===

#[test]
fn aliyun_round_trip_json_body() {
    let r = req(
        "POST",
        "https://api.example.com/v1/items?x=1&b=%E4%B8%AD",
        &[("Content-Type", "application/json"), ("X-Ca-Stage", "TEST")],
        Some(br#"{"a":1}"#),
    );
    let (v, c) = round_trip(&r, &opts(SchemeKind::Aliyun, "203753385"));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    assert!(
        v.headers
            .get("x-ca-signature-headers")
            .unwrap()
            .contains("x-ca-stage")
    );
    tamper(
        &v,
        Some("x-ca-nonce"),
        None,
        Some(DenyCode::BodyDigestMismatch),
    );
    assert_eq!(
        c.headers_to_remove(),
        [
            "x-ca-signature",
            "x-ca-signature-headers",
            "x-ca-signature-method"
        ]
    );
}

#[test]
fn aliyun_round_trip_form_and_sha1() {
    let r = req(
        "POST",
        "http://h.example:8080/f?x=1&a=0",
        &[],
        Some(b"z=%20q+r&e="),
    );
    let mut o = opts(SchemeKind::Aliyun, "k1");
    o.algorithm = Some("HmacSHA1");
    let (v, c) = round_trip(&r, &o);
    assert_eq!(
        v.headers.get("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(v.headers.get("content-md5").is_none());
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    // Query and form parameters sort together, decoded.
    let sts = aliyun::string_to_sign(
        &v,
        v.headers.get("x-ca-signature-headers"),
        aliyun::Variant::default(),
    );
    assert!(sts.ends_with("/f?a=0&e&x=1&z= q r"), "{sts}");
    // What such a string cannot tell apart is refused before any HMAC: a repeated name
    // (in the query, or in both query and form), or escapes that decode to '&' / '='.
    for (query, form) in [
        ("x=1&a=0&x=2", "z=%20q+r&e="),
        ("x=1&a=0", "z=%20q+r&e=&a=9"),
        ("x=1&a=0%26to%3Dmallory", "z=%20q+r&e="),
        ("x=1&a%3D0=1", "z=%20q+r&e="),
    ] {
        let mut t = v.clone();
        t.query = Some(query.into());
        t.body = Some(form.as_bytes().to_vec());
        assert_eq!(
            verify_code(&t, SECRET),
            Some(DenyCode::Malformed),
            "{query} / {form}"
        );
    }
    let mut t = v.clone();
    t.path = flip_last(&t.path);
    assert_eq!(verify_code(&t, SECRET), Some(DenyCode::SignatureMismatch));
    tamper(
        &v,
        Some("x-ca-timestamp"),
        Some(DenyCode::SignatureMismatch),
        None,
    );
}

#[test]
fn appcode_round_trip() {
    let r = req("GET", "https://api.example.com/p?x=1", &[], None);
    let o = SignOptions::new(
        SchemeKind::AppCode,
        "",
        b"3F2504E04F8911D39A0C0305E82C3301",
        NOW,
        "",
    );
    let signed = sign(&r, &o).unwrap();
    let v = received(&r, &signed);
    let c = detect(&v).unwrap();
    assert_eq!(
        c.id(),
        CredentialId::AppCode("3F2504E04F8911D39A0C0305E82C3301")
    );
    assert!(c.sends_secret());
    c.verify(&v, &cfg(), &api(), b"3F2504E04F8911D39A0C0305E82C3301")
        .unwrap();
    assert_eq!(
        c.verify(&v, &cfg(), &api(), b"other").unwrap_err().code,
        DenyCode::UnknownAppCode
    );
    c.check_fresh(&cfg(), &api(), NOW).unwrap();
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::NotCovered);
    assert_eq!(c.headers_to_remove(), ["authorization"]);
    assert!(format!("{c:?}").contains("redacted"));
}

#[test]
fn tencent_round_trip_all_algorithms() {
    for alg in ["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"] {
        let r = req(
            "PUT",
            "https://service-1.gz.apigw.tencentcs.com/release/data?x=1&a=",
            &[("Content-Type", "application/json")],
            Some(b"{\"k\": \"v\"}"),
        );
        let mut o = opts(SchemeKind::Tencent, "AKIDkey");
        o.algorithm = Some(alg);
        let (v, c) = round_trip(&r, &o);
        assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
        assert!(c.nonce().is_some());
        tamper(
            &v,
            Some("x-apigw-nonce"),
            None,
            Some(DenyCode::BodyDigestMismatch),
        );
    }
}

#[test]
fn tencent_round_trip_env_prefix() {
    let r = req("GET", "https://svc.example.com/test/users?x=1", &[], None);
    let mut o = opts(SchemeKind::Tencent, "AKIDkey");
    o.tencent_strip_env_prefix = true;
    let signed = sign(&r, &o).unwrap();
    let v = received(&r, &signed);
    let c = detect(&v).unwrap();
    let strip = ApiSchemeOptions {
        tencent_strip_env_prefix: true,
        ..api()
    };
    c.verify(&v, &cfg(), &strip, SECRET).unwrap();
    assert_eq!(
        c.verify(&v, &cfg(), &api(), SECRET).unwrap_err().code,
        DenyCode::SignatureMismatch
    );
    assert_eq!(tencent::strip_env_prefix("/release"), "/");
    assert_eq!(tencent::strip_env_prefix("/releases/x"), "/releases/x");
    assert_eq!(tencent::strip_env_prefix("/prepub/a/b"), "/a/b");
}

#[test]
fn bkapi_round_trip_header_form() {
    let r = req("GET", "https://bk.example.com/api/v1/?x=1", &[], None);
    let (v, c) = round_trip(&r, &opts(SchemeKind::Bkapi, "my-app"));
    assert_eq!(c.id(), CredentialId::BkAppCode("my-app"));
    assert!(c.sends_secret());
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::NotCovered);
    assert_eq!(
        c.verify(&v, &cfg(), &api(), b"nope").unwrap_err().code,
        DenyCode::SignatureMismatch
    );
    assert_eq!(c.headers_to_remove(), ["x-bkapi-authorization"]);
    assert!(c.nonce().is_none());
}

#[test]
fn bkapi_round_trip_legacy_post() {
    let r = req(
        "POST",
        "https://bk.example.com/api/v1/?x=1&data=ignored",
        &[("Content-Type", "application/json")],
        Some(b"{\"q\":1}"),
    );
    let mut o = opts(SchemeKind::Bkapi, "my-app");
    o.algorithm = Some("signature");
    let (v, c) = round_trip(&r, &o);
    assert!(!c.sends_secret());
    assert!(c.nonce().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    tamper(&v, None, Some(DenyCode::SignatureMismatch), None);
    let mut no_body = v.clone();
    no_body.body = None;
    assert_eq!(
        verify_code(&no_body, SECRET),
        Some(DenyCode::BodyDigestMissing)
    );
    let mut partial = v.clone();
    partial.body_partial = true;
    assert_eq!(
        verify_code(&partial, SECRET),
        Some(DenyCode::BodyIncomplete)
    );
}

#[test]
fn sigv4_round_trip_header_form() {
    let r = req(
        "POST",
        "https://execute-api.us-east-1.amazonaws.com/v1/a%20b/c?x=1&b=x%2By&a=",
        &[("Content-Type", "application/json"), ("X-Custom", "a   b")],
        Some(br#"{"hello":"world"}"#),
    );
    let (v, c) = round_trip(&r, &opts(SchemeKind::SigV4, "AKIDEXAMPLE"));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    let mut date = v.clone();
    let d = date.headers.get("x-amz-date").unwrap().to_owned();
    set_header(
        &mut date,
        "x-amz-date",
        &format!("{}Z", flip_last(&d[..15])),
    );
    assert_eq!(
        verify_code(&date, SECRET),
        Some(DenyCode::SignatureMismatch)
    );
    tamper(
        &v,
        Some("x-custom"),
        Some(DenyCode::SignatureMismatch),
        None,
    );
    assert_eq!(
        c.check_fresh(&cfg(), &api(), NOW + 901_000)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    let wrong = ApiSchemeOptions {
        sigv4_service: Some("s3".into()),
        ..api()
    };
    assert_eq!(
        c.verify(&v, &cfg(), &wrong, SECRET).unwrap_err().code,
        DenyCode::Malformed
    );
}

#[test]
fn sigv4_round_trip_s3_and_presigned() {
    let r = req(
        "PUT",
        "https://bucket.s3.amazonaws.com/key%20name.txt?x=1",
        &[],
        Some(b"data"),
    );
    let mut o = opts(SchemeKind::SigV4, "AKIDEXAMPLE");
    o.region = Some("us-east-1");
    o.service = Some("s3");
    let (v, c) = round_trip(&r, &o);
    assert!(v.headers.get("x-amz-content-sha256").is_some());
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    tamper(
        &v,
        Some("x-amz-content-sha256"),
        None,
        Some(DenyCode::BodyDigestMismatch),
    );

    let r = req("GET", "https://bucket.s3.amazonaws.com/k?x=1", &[], None);
    o.presign_expires_s = Some(600);
    let (v, c) = round_trip(&r, &o);
    assert!(v.query.as_deref().unwrap().contains("X-Amz-Signature="));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::NotCovered);
    c.check_fresh(&cfg(), &api(), NOW + 599_000).unwrap();
    assert_eq!(
        c.check_fresh(&cfg(), &api(), NOW + 601_000)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    tamper(&v, None, None, None);
}

#[test]
fn rfc9421_round_trip() {
    let r = req(
        "POST",
        "https://API.example.com:443/v1/orders?x=1&b=2",
        &[("Content-Type", "application/json")],
        Some(br#"{"hello": "world"}"#),
    );
    let (v, c) = round_trip(&r, &opts(SchemeKind::Rfc9421, "app-123"));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    assert_eq!(c.nonce_ttl_ms(&cfg()), 600_000);
    tamper(
        &v,
        Some("content-type"),
        None,
        Some(DenyCode::BodyDigestMismatch),
    );
    // Past expires (created + 300 s).
    assert_eq!(
        c.check_fresh(&cfg(), &api(), NOW + 301_000)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    let mut partial = v.clone();
    partial.body_partial = true;
    assert_eq!(
        c.check_body(&partial).unwrap_err().code,
        DenyCode::BodyIncomplete
    );
    let mut absent = v.clone();
    absent.body = None;
    assert_eq!(c.check_body(&absent).unwrap(), BodyCheck::NotAvailable);
}

// === Detection rules ===

fn headers_view(headers: &[(&str, &str)], target: &str) -> RequestView {
    let mut v = RequestView {
        method: "GET".into(),
        scheme: "https".into(),
        host: "h.example".into(),
        ..RequestView::default()
    };
    v.set_target(target);
    for (n, val) in headers {
        v.headers.push(n, *val);
    }
    v
}

fn detect_code(headers: &[(&str, &str)], target: &str) -> Result<SchemeKind, DenyCode> {
    detect(&headers_view(headers, target))
        .map(|c| c.kind())
        .map_err(|d| d.code)
}

#[test]
fn detection_rules() {
    use DenyCode::*;
    assert_eq!(detect_code(&[], "/"), Err(MissingCredential));
    assert_eq!(
        detect_code(&[("Authorization", "Bearer abc")], "/"),
        Err(MissingCredential)
    );
    assert_eq!(
        detect_code(
            &[
                ("X-Ca-Key", "a"),
                ("X-Ca-Key", "b"),
                ("X-Ca-Signature", "s")
            ],
            "/"
        ),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(
            &[
                ("Authorization", "APPCODE a"),
                ("Authorization", "APPCODE b")
            ],
            "/"
        ),
        Err(Malformed)
    );
    assert_eq!(detect_code(&[("X-Ca-Key", "k")], "/"), Err(Malformed));
    assert_eq!(
        detect_code(
            &[
                ("X-Ca-Key", "k"),
                ("X-Ca-Signature", "s"),
                ("Authorization", "APPCODE c")
            ],
            "/"
        ),
        Ok(SchemeKind::Aliyun)
    );
    assert_eq!(
        detect_code(&[("X-Ca-Key", "k"), ("Authorization", "APPCODE c")], "/"),
        Ok(SchemeKind::AppCode)
    );
    assert_eq!(
        detect_code(
            &[
                ("X-Ca-Key", "k"),
                ("X-Ca-Signature", "s"),
                ("Authorization", r#"hmac id="a""#)
            ],
            "/"
        ),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("Authorization", "APPCODE ")], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("Authorization", "appcode  c0de ")], "/"),
        Ok(SchemeKind::AppCode)
    );
    assert_eq!(detect_code(&[], "/p?AppCode=c0de"), Ok(SchemeKind::AppCode));
    assert_eq!(detect_code(&[], "/p?AppCode=a&AppCode=b"), Err(Malformed));
    assert_eq!(
        detect_code(&[("Authorization", "AWS4-HMAC-SHA512 Credential=x")], "/"),
        Err(UnsupportedAlgorithm)
    );
    assert_eq!(
        detect_code(&[("Authorization", "AWS4-HMAC-SHA256 Credential=x")], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("Authorization", r#"hmac id="a", signature="b""#)], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("X-Bkapi-Authorization", "{not json")], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("X-Bkapi-Authorization", r#"{"bk_app_code": ""}"#)], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(
            &[(
                "X-Bkapi-Authorization",
                r#"{"bk_app_code": "a b", "bk_app_secret": "s"}"#
            )],
            "/"
        ),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(
            &[(
                "X-Bkapi-Authorization",
                r#"{"app_code": "a", "app_secret": "s"}"#
            )],
            "/"
        ),
        Ok(SchemeKind::Bkapi)
    );
    assert_eq!(
        detect_code(&[("X-Bkapi-Authorization", r#"{"bk_app_code": "a"}"#)], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[("Signature-Input", "sig1=();keyid=\"k\"")], "/"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(
            &[
                (
                    "Signature-Input",
                    "sig1=(\"@method\");keyid=\"k\";alg=\"ed25519\""
                ),
                ("Signature", "sig1=:AAAA:")
            ],
            "/"
        ),
        Err(UnsupportedAlgorithm)
    );
    assert_eq!(
        detect_code(
            &[
                ("Signature-Input", "sig1=(\"@method\");keyid=\"k\""),
                ("Signature", "sig1=:AAAA:"),
                ("X-Ca-Key", "k")
            ],
            "/"
        ),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(&[], "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&AppCode=x"),
        Err(Malformed)
    );
    assert_eq!(
        detect_code(
            &[],
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token=t"
        ),
        Err(Malformed)
    );
}

#[test]
fn appcode_query_is_reported_for_removal() {
    let v = headers_view(&[], "/p?AppCode=c0de&x=1");
    let c = detect(&v).unwrap();
    assert_eq!(c.id(), CredentialId::AppCode("c0de"));
    assert!(c.headers_to_remove().is_empty());
    assert_eq!(c.query_params_to_remove(), ["AppCode"]);
}

#[test]
fn rfc9421_picks_first_label_with_keyid() {
    let r = req("GET", "https://h.example/p", &[], None);
    let signed = sign(&r, &opts(SchemeKind::Rfc9421, "kid")).unwrap();
    let mut v = received(&r, &signed);
    let input = v.headers.get("signature-input").unwrap().to_owned();
    let sig = v.headers.get("signature").unwrap().to_owned();
    set_header(
        &mut v,
        "signature-input",
        &format!(
            "other=(\"@method\");created=1, x=(\"@path\");alg=\"rsa-pss-sha512\";keyid=\"y\", {input}"
        ),
    );
    set_header(
        &mut v,
        "signature",
        &format!("other=:AAAA:, x=:AAAA:, {sig}"),
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.id(), CredentialId::AppKey("kid"));
    c.verify(&v, &cfg(), &api(), SECRET).unwrap();
}

#[test]
fn rfc9421_required_components() {
    let v = headers_view(
        &[
            (
                "Signature-Input",
                "sig1=(\"@method\" \"@authority\" \"@path\");created=1;keyid=\"k\"",
            ),
            ("Signature", "sig1=:AAAA:"),
        ],
        "/p?q=1",
    );
    let e = detect(&v)
        .unwrap()
        .verify(&v, &cfg(), &api(), SECRET)
        .unwrap_err();
    assert_eq!(e.code, DenyCode::Malformed);
    assert!(e.message.contains("@query"));
    assert!(e.headers.iter().any(|(n, _)| n == "Accept-Signature"));
    let mut with_body = headers_view(
        &[
            (
                "Signature-Input",
                "sig1=(\"@method\" \"@authority\" \"@request-target\");created=1;keyid=\"k\"",
            ),
            ("Signature", "sig1=:AAAA:"),
        ],
        "/p?q=1",
    );
    with_body.headers.push("content-length", "3");
    let e = detect(&with_body)
        .unwrap()
        .verify(&with_body, &cfg(), &api(), SECRET)
        .unwrap_err();
    assert!(e.message.contains("content-digest"), "{}", e.message);
}

#[test]
fn aliyun_variants_lowercase_names_and_decoded_path() {
    // A client that lists names in upper case but signs them lower-cased (Higress style),
    // on a path whose raw and decoded forms differ.
    let mut v = headers_view(
        &[
            ("X-Ca-Key", "k"),
            ("X-Ca-Timestamp", "1700000000"),
            ("X-Ca-Signature-Headers", "X-Ca-Key,X-Ca-Timestamp"),
        ],
        "/caf%C3%A9?x=1",
    );
    let variant = aliyun::Variant {
        lowercase_names: true,
        decoded_path: true,
    };
    let sts = aliyun::string_to_sign(&v, v.headers.get("x-ca-signature-headers"), variant);
    assert!(
        sts.contains("x-ca-key:k\n") && sts.ends_with("/café?x=1"),
        "{sts}"
    );
    let sig = aliyun::sign_string(canonical::HmacAlg::Sha256, SECRET, &sts).unwrap();
    v.headers.push("x-ca-signature", sig);
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), SECRET).unwrap();
    // Ten digits: seconds.
    c.check_fresh(&cfg(), &api(), 1_700_000_000_000 + 5_000)
        .unwrap();
    let replay = ApiSchemeOptions {
        require_timestamp_and_nonce: true,
        ..api()
    };
    assert_eq!(
        c.check_fresh(&cfg(), &replay, 1_700_000_000_000)
            .unwrap_err()
            .code,
        DenyCode::NonceMissing
    );
}

#[test]
fn aliyun_unsupported_method_and_decoration() {
    let v = headers_view(
        &[
            ("X-Ca-Key", "k"),
            ("X-Ca-Signature", "c2ln"),
            ("X-Ca-Signature-Method", "HmacMD5"),
        ],
        "/",
    );
    let c = detect(&v).unwrap();
    assert_eq!(
        c.verify(&v, &cfg(), &api(), SECRET).unwrap_err().code,
        DenyCode::UnsupportedAlgorithm
    );
    let d = c.decorate_deny(Deny::new(DenyCode::UnknownAppKey, "no such key"));
    assert!(
        d.headers
            .contains(&("X-Ca-Error-Code".into(), "A400IK".into()))
    );
    let d = c.decorate_deny(Deny::new(DenyCode::GrantExpired, "expired"));
    assert!(
        d.headers
            .contains(&("X-Ca-Error-Code".into(), "A403EP".into()))
    );
    // A header already present is kept.
    let d = c.decorate_deny(
        Deny::new(DenyCode::SignatureMismatch, "x").with_header("X-Ca-Error-Message", "mine"),
    );
    assert_eq!(
        d.headers
            .iter()
            .filter(|(n, _)| n == "X-Ca-Error-Message")
            .count(),
        1
    );
}

#[test]
fn tencent_specific_failures() {
    let v = headers_view(
        &[
            (
                "Authorization",
                r#"hmac id="a", algorithm="hmac-md5", headers="x-date", signature="c2ln""#,
            ),
            ("X-Date", "Mon, 19 Mar 2018 12:08:40 GMT"),
        ],
        "/",
    );
    assert_eq!(
        verify_code(&v, SECRET),
        Some(DenyCode::UnsupportedAlgorithm)
    );
    let v = headers_view(
        &[
            (
                "Authorization",
                r#"hmac id="a", algorithm="hmac-sha1", headers="date", signature="c2ln""#,
            ),
            ("X-Date", "Mon, 19 Mar 2018 12:08:40 GMT"),
        ],
        "/",
    );
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::TimestampMissing));
    let v = headers_view(
        &[(
            "Authorization",
            r#"hmac id="a", id="b", algorithm="hmac-sha1", signature="c2ln""#,
        )],
        "/",
    );
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::Malformed));
}

#[test]
fn sigv4_fallbacks_single_encoding_and_plus() {
    // A signer that encodes the path once (curl 8 for non-S3 paths it does not re-encode).
    let key = sigv4::signing_key(SECRET, "20231114", "us-east-1", "svc").unwrap();
    let scope = sigv4::scope("20231114", "us-east-1", "svc");
    let mut v = headers_view(&[("X-Amz-Date", "20231114T221320Z")], "/a%20b?q=a+b");
    let signed = vec!["host".to_owned(), "x-amz-date".to_owned()];
    for (uri, query) in [
        (
            sigv4::canonical_uri(&v.path, sigv4::UriMode::SingleEncoded),
            sigv4::canonical_query(v.query.as_deref(), false, false),
        ),
        (
            sigv4::canonical_uri(&v.path, sigv4::UriMode::DoubleEncoded),
            sigv4::canonical_query(v.query.as_deref(), false, true),
        ),
    ] {
        let creq = sigv4::canonical_request(&v, &uri, &query, &signed, sigv4::EMPTY_SHA256);
        let sig = sigv4::signature_hex(
            &key,
            &sigv4::string_to_sign("20231114T221320Z", &scope, &creq),
        )
        .unwrap();
        let mut t = v.clone();
        t.headers.push(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=AK/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}"),
        );
        let c = detect(&t).unwrap();
        c.verify(&t, &cfg(), &api(), SECRET).unwrap();
    }
    // Scope date must equal the request date.
    v.headers.push(
        "authorization",
        format!("AWS4-HMAC-SHA256 Credential=AK/20231115/us-east-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature={}", "0".repeat(64)),
    );
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::Malformed));
}

#[test]
fn sigv4_body_rules() {
    let mut v = headers_view(
        &[("X-Amz-Date", "20231114T221320Z"), ("Content-Length", "5")],
        "/",
    );
    v.headers.push(
        "authorization",
        format!("AWS4-HMAC-SHA256 Credential=AK/20231114/us-east-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature={}", "0".repeat(64)),
    );
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::BodyDigestMissing));
    v.body = Some(b"hello".to_vec());
    v.body_partial = true;
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::BodyIncomplete));
    v.headers
        .push("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    assert_eq!(
        verify_code(&v, SECRET),
        Some(DenyCode::UnsupportedAlgorithm)
    );
}

#[test]
fn scheme_kind_names() {
    for k in SchemeKind::ALL {
        assert_eq!(k.as_str().to_uppercase().parse::<SchemeKind>().unwrap(), k);
    }
    assert!("hmac".parse::<SchemeKind>().is_err());
    assert!(SchemeKind::AppCode.sends_secret() && SchemeKind::Bkapi.sends_secret());
    assert!(!SchemeKind::Aliyun.sends_secret());
}

// === Proptests: total parsers ===

fn exercise(v: &RequestView) {
    if let Ok(c) = detect(v) {
        let _ = c.id();
        let _ = c.verify(v, &cfg(), &api(), SECRET);
        let strict = ApiSchemeOptions {
            require_timestamp_and_nonce: true,
            sigv4_region: Some("r".into()),
            ..api()
        };
        let _ = c.verify(v, &cfg(), &strict, SECRET);
        let _ = c.check_fresh(&cfg(), &api(), NOW);
        let _ = c.check_fresh(&cfg(), &strict, i64::MIN);
        let _ = c.check_fresh(&cfg(), &strict, i64::MAX);
        let _ = c.nonce();
        let _ = c.nonce_ttl_ms(&cfg());
        let _ = c.check_body(v);
        let _ = c.headers_to_remove();
        let _ = c.query_params_to_remove();
        let _ = c.decorate_deny(Deny::new(DenyCode::Internal, "x"));
    }
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,80}", "[ -~]{0,80}", "[a-z0-9=&%+;:,\"()*?@/ -]{0,80}",]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn credential_headers_never_panic(
        which in 0usize..9,
        value in any_text(),
        extra in any_text(),
        path in "[ -~]{0,40}",
        query in proptest::option::of("[ -~]{0,40}"),
        body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        partial in any::<bool>(),
    ) {
        let mut v = RequestView { method: "POST".into(), host: "h:443".into(), path, query, body, body_partial: partial, ..RequestView::default() };
        match which {
            0 => {
                v.headers.push("x-ca-key", extra.clone());
                v.headers.push("x-ca-signature", value.clone());
                v.headers.push("x-ca-signature-headers", value.clone());
                v.headers.push("x-ca-timestamp", extra);
                v.headers.push("x-ca-signature-method", value);
            }
            1 => v.headers.push("authorization", format!("hmac {value}")),
            2 => v.headers.push("authorization", format!("AWS4-HMAC-SHA256 {value}")),
            3 => v.headers.push("authorization", format!("APPCODE {value}")),
            4 => v.headers.push("x-bkapi-authorization", value),
            5 => {
                v.headers.push("signature-input", value);
                v.headers.push("signature", extra);
            }
            6 => {
                v.headers.push("signature-input", format!("sig1=(\"@method\" \"content-digest\" {value});created=1;keyid=\"k\""));
                v.headers.push("signature", "sig1=:AAAA:");
                v.headers.push("content-digest", extra);
            }
            7 => v.query = Some(format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={value}&X-Amz-Date={extra}&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature={}", "a".repeat(64))),
            _ => v.query = Some(format!("bk_app_code=a&bk_signature={value}&bk_nonce={extra}&bk_timestamp={extra}")),
        }
        v.headers.push("content-type", "application/x-www-form-urlencoded");
        exercise(&v);
    }

    #[test]
    fn canonicalisers_never_panic(s in any_text(), b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = canonical::percent_decode(&s, true);
        let _ = canonical::decode_lossy(&s, false);
        let _ = canonical::first_wins_params(&s);
        let _ = canonical::auth_params(&s);
        let _ = canonical::parse_amz_date(&s);
        let _ = canonical::parse_http_date_ms(&s);
        let _ = canonical::b64_decode(&s);
        let _ = canonical::form_encode(&b);
        let _ = aliyun::signed_header_names(&s);
        let _ = aliyun::parse_timestamp(&s);
        let _ = sigv4::canonical_query(Some(&s), true, true);
        for m in [sigv4::UriMode::DoubleEncoded, sigv4::UriMode::SingleEncoded, sigv4::UriMode::Raw] {
            let _ = sigv4::canonical_uri(&s, m);
        }
        let _ = rfc9421::sf::parse_dictionary(&s);
        let _ = tencent::strip_env_prefix(&s);
    }

    #[test]
    fn sf_round_trips(label in "[a-z][a-z0-9-]{0,6}", names in proptest::collection::vec("[a-z@][a-z-]{0,8}", 0..5), created in 0i64..4_000_000_000, kid in "[ -~]{0,12}") {
        use rfc9421::sf::{Bare, Item, Member};
        let items: Vec<Item> = names.iter().map(|n| Item { bare: Bare::Str(n.clone()), params: vec![] }).collect();
        let params = vec![("created".to_owned(), Bare::Integer(created)), ("keyid".to_owned(), Bare::Str(kid))];
        let text = rfc9421::sf::serialize_inner(&items, &params);
        let parsed = rfc9421::sf::parse_dictionary(&format!("{label}={text}")).unwrap();
        prop_assert_eq!(parsed.len(), 1);
        let Member::Inner { items: pi, params: pp, raw } = &parsed[0].1 else { panic!("inner") };
        prop_assert_eq!(pi, &items);
        prop_assert_eq!(pp, &params);
        prop_assert_eq!(raw, &text);
    }

    #[test]
    fn every_scheme_round_trips(
        scheme_ix in 0usize..6,
        seg in proptest::collection::vec("[a-zA-Z0-9._~-]{1,8}|%[0-9A-F]{2}", 0..4),
        query in proptest::option::of("[a-z]{1,3}=[a-zA-Z0-9%+.-]{0,6}(&[a-z]{1,3}=[a-z0-9]{0,4}){0,3}"),
        body in proptest::option::of("[ -~]{0,40}"),
        json in any::<bool>(),
    ) {
        let scheme = SchemeKind::ALL[scheme_ix];
        let path = format!("/{}", seg.join("/"));
        let url = match &query { Some(q) => format!("https://svc.us-east-1.example.com{path}?{q}"), None => format!("https://svc.us-east-1.example.com{path}") };
        let headers: Vec<(&str, &str)> = if json && body.is_some() { vec![("Content-Type", "application/json")] } else { vec![] };
        let r = req(if body.is_some() { "POST" } else { "GET" }, &url, &headers, body.as_deref().map(str::as_bytes));
        let mut o = opts(scheme, "key-1");
        if scheme == SchemeKind::AppCode { o.secret = b"the-app-code"; }
        let signed = sign(&r, &o).unwrap();
        let v = received(&r, &signed);
        let c = detect(&v).unwrap();
        prop_assert_eq!(c.kind(), scheme);
        // Parameters a sorted string-to-sign cannot tell apart are refused, signed or not.
        if matches!(scheme, SchemeKind::Aliyun | SchemeKind::Tencent) && super::check_signed_params(&v).is_err() {
            prop_assert_eq!(c.verify(&v, &cfg(), &api(), o.secret).map_err(|d| d.code), Err(DenyCode::Malformed));
            return Ok(());
        }
        prop_assert!(c.verify(&v, &cfg(), &api(), o.secret).is_ok(), "{:?}", c.verify(&v, &cfg(), &api(), o.secret));
        prop_assert!(c.check_fresh(&cfg(), &api(), NOW).is_ok());
        let bc = c.check_body(&v).unwrap();
        if body.as_deref().is_some_and(|b| !b.is_empty()) && matches!(scheme, SchemeKind::Aliyun | SchemeKind::Tencent | SchemeKind::SigV4 | SchemeKind::Rfc9421) {
            prop_assert_eq!(bc, BodyCheck::Verified);
        }
    }
}

#[test]
fn hostile_sizes_are_refused_cheaply() {
    let many: Vec<String> = (0..200).map(|i| format!("x-h{i}")).collect();
    let v = headers_view(
        &[
            ("X-Ca-Key", "k"),
            ("X-Ca-Signature", "c2ln"),
            ("X-Ca-Signature-Headers", &many.join(",")),
        ],
        "/",
    );
    assert_eq!(verify_code(&v, SECRET), Some(DenyCode::Malformed));
    let auth = format!(
        r#"hmac id="a", algorithm="hmac-sha1", headers="x-date {}", signature="c2ln""#,
        many.join(" ")
    );
    assert_eq!(
        detect_code(&[("Authorization", &auth)], "/"),
        Err(DenyCode::Malformed)
    );
    let comps: Vec<String> = many.iter().map(|m| format!("\"{m}\"")).collect();
    let input = format!("sig1=({});keyid=\"k\"", comps.join(" "));
    assert_eq!(
        detect_code(
            &[("Signature-Input", &input), ("Signature", "sig1=:AAAA:")],
            "/"
        ),
        Err(DenyCode::Malformed)
    );
    // A huge query is handled in n log n.
    let q: Vec<String> = (0..20_000).map(|i| format!("k{}={i}", i % 5000)).collect();
    let mut p = canonical::first_wins_params(&q.join("&"));
    assert_eq!(p.len(), 5000);
    assert_eq!(p.iter().find(|(k, _)| k == "k7").unwrap().1, "7");
    canonical::merge_params(&mut p, canonical::first_wins_params("k7=over&zz=1"));
    assert_eq!(p.len(), 5001);
    assert_eq!(p.iter().find(|(k, _)| k == "k7").unwrap().1, "over");
}

#[test]
fn vendor_decorations() {
    let bk = detect(&headers_view(
        &[(
            "X-Bkapi-Authorization",
            r#"{"bk_app_code":"a","bk_app_secret":"s"}"#,
        )],
        "/",
    ))
    .unwrap();
    let d = bk.decorate_deny(Deny::new(DenyCode::UnknownAppKey, "x"));
    assert!(
        d.headers
            .contains(&("X-Bkapi-Error-Code".into(), "1640001".into()))
    );
    assert!(d.headers.contains(&(
        "X-Bkapi-Error-Message".into(),
        "Parameters error [reason=\"app not found\"]".into()
    )));
    let d = bk.decorate_deny(Deny::new(DenyCode::NoGrant, "x"));
    assert!(
        d.headers
            .contains(&("X-Bkapi-Error-Code".into(), "1640301".into()))
    );

    let r = req("GET", "https://svc.us-east-1.example.com/", &[], None);
    let signed = sign(&r, &opts(SchemeKind::SigV4, "AK")).unwrap();
    let aws = detect(&received(&r, &signed)).unwrap();
    let d = aws.decorate_deny(Deny::new(DenyCode::UnknownAppKey, "x"));
    assert!(d.headers.contains(&(
        "x-amzn-ErrorType".into(),
        "UnrecognizedClientException".into()
    )));

    let signed = sign(&r, &opts(SchemeKind::Rfc9421, "kid")).unwrap();
    let rfc = detect(&received(&r, &signed)).unwrap();
    let d = rfc.decorate_deny(Deny::new(DenyCode::TimestampExpired, "x"));
    assert!(
        d.headers
            .iter()
            .any(|(n, v)| n == "WWW-Authenticate" && v.starts_with("Signature"))
    );
    assert!(
        rfc.decorate_deny(Deny::new(DenyCode::NoGrant, "x"))
            .headers
            .is_empty()
    );

    let signed = sign(
        &r,
        &SignOptions::new(SchemeKind::AppCode, "", b"code", NOW, ""),
    )
    .unwrap();
    let ac = detect(&received(&r, &signed)).unwrap();
    let d = ac.decorate_deny(Deny::new(DenyCode::UnknownAppCode, "x"));
    assert!(
        d.headers
            .contains(&("X-Ca-Error-Code".into(), "A401AC".into()))
    );
}

#[test]
fn signer_honours_an_explicit_host() {
    let r = req(
        "GET",
        "http://127.0.0.1:8080/p",
        &[("Host", "api.example.com")],
        None,
    );
    let mut o = opts(SchemeKind::SigV4, "AK");
    o.region = Some("us-east-1");
    o.service = Some("execute-api");
    let signed = sign(&r, &o).unwrap();
    let mut v = received(&r, &signed);
    v.host = "api.example.com".into();
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), SECRET).unwrap();
    assert!(sign(&r, &opts(SchemeKind::Aliyun, " ")).is_err());
}

#[test]
fn sigv4_unsorted_signed_headers_list() {
    let key = sigv4::signing_key(SECRET, "20231114", "us-east-1", "svc").unwrap();
    let scope = sigv4::scope("20231114", "us-east-1", "svc");
    let v = headers_view(&[("X-Amz-Date", "20231114T221320Z")], "/p");
    let sorted = vec!["host".to_owned(), "x-amz-date".to_owned()];
    let creq = sigv4::canonical_request(&v, "/p", "", &sorted, sigv4::EMPTY_SHA256);
    let sig = sigv4::signature_hex(
        &key,
        &sigv4::string_to_sign("20231114T221320Z", &scope, &creq),
    )
    .unwrap();
    let mut t = v.clone();
    t.headers.push(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential=AK/{scope}, SignedHeaders=x-amz-date;host, Signature={sig}"
        ),
    );
    detect(&t)
        .unwrap()
        .verify(&t, &cfg(), &api(), SECRET)
        .unwrap();
}

/// Every scheme has one admin API value and back; nothing else maps to a scheme.
#[test]
fn scheme_kinds_and_admin_values_map_one_to_one() {
    use crate::pb::admin::AuthScheme;
    for k in SchemeKind::ALL {
        assert_eq!(SchemeKind::from_proto(k.proto() as i32), Some(k));
        assert_eq!(k.as_str().parse::<SchemeKind>(), Ok(k));
    }
    assert_eq!(SchemeKind::from_proto(AuthScheme::Unspecified as i32), None);
    assert_eq!(SchemeKind::from_proto(999), None);
}

/// A deny about a credential names its scheme (the metric label), also when the
/// credential could not even be parsed; a request without one names none.
#[test]
fn denies_name_the_scheme_of_the_credential_they_are_about() {
    let mut v = RequestView {
        method: "GET".into(),
        host: "h".into(),
        path: "/".into(),
        ..Default::default()
    };
    assert_eq!(detect(&v).err().map(|d| d.scheme), Some(None));
    v.headers.push("x-ca-key", "k");
    v.headers.push("x-ca-key", "k2");
    // Duplicate header: refused before any scheme is chosen.
    assert_eq!(detect(&v).err().map(|d| d.scheme), Some(None));
    v.headers = crate::request::Headers::new();
    v.headers.push("authorization", "hmac garbage");
    let Err(d) = detect(&v) else {
        panic!("an unparseable Tencent credential was accepted")
    };
    assert_eq!(d.scheme, Some("tencent"), "{d:?}");
}
