//! Worked examples of each scheme (the vendors' published examples where they give
//! one, and RFC 9421's), byte for byte, through the public API: `detect` → `verify` → `check_fresh` → `check_body`, plus the public
//! string-to-sign builders where the spec prints the intermediate text.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use keygate::deny::DenyCode;
use keygate::request::RequestView;
use keygate::scheme::canonical;
use keygate::scheme::{
    ApiSchemeOptions, BodyCheck, CredentialId, SchemeConfig, SchemeKind, aliyun, bkapi, detect,
    rfc9421, sigv4, tencent,
};

fn view(
    method: &str,
    scheme: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> RequestView {
    let mut v = RequestView {
        method: method.to_owned(),
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        body: body.map(<[u8]>::to_vec),
        ..RequestView::default()
    };
    v.set_target(target);
    for (n, val) in headers {
        v.headers.push(n, *val);
    }
    v
}

fn cfg() -> SchemeConfig {
    SchemeConfig::default()
}

fn api() -> ApiSchemeOptions {
    ApiSchemeOptions::default()
}

// === §1.6 Alibaba ===

const A1_STS: &str = "GET\napplication/json\n\napplication/json\n\nx-ca-key:appKey\nx-ca-nonce:787dd0c2-7bd8-41cd-9c19-62c05ea524a2\nx-ca-timestamp:1646365291734\n/Third/Tools/checkSign";

fn aliyun_a1() -> RequestView {
    view(
        "GET",
        "http",
        "example.com",
        "/Third/Tools/checkSign",
        &[
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("X-Ca-Timestamp", "1646365291734"),
            ("X-Ca-Nonce", "787dd0c2-7bd8-41cd-9c19-62c05ea524a2"),
            ("X-Ca-Key", "appKey"),
            (
                "X-Ca-Signature-Headers",
                "x-ca-key,x-ca-nonce,x-ca-timestamp",
            ),
            (
                "X-Ca-Signature",
                "EdJSFAMOWyXZOpXhevZnjuS0ZafnwnCqaSk5hz+tXo8=",
            ),
        ],
        None,
    )
}

#[test]
fn aliyun_1_6_a_get_vector() {
    let v = aliyun_a1();
    let sts = aliyun::string_to_sign(
        &v,
        v.headers.get("x-ca-signature-headers"),
        aliyun::Variant::default(),
    );
    assert_eq!(sts, A1_STS);
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), SchemeKind::Aliyun);
    assert_eq!(c.id(), CredentialId::AppKey("appKey"));
    c.verify(&v, &cfg(), &api(), b"appSecret").unwrap();
    c.check_fresh(&cfg(), &api(), 1_646_365_291_734 + 60_000)
        .unwrap();
    assert_eq!(c.nonce(), Some("787dd0c2-7bd8-41cd-9c19-62c05ea524a2"));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::NotCovered);
    let e = c.verify(&v, &cfg(), &api(), b"wrongSecret").unwrap_err();
    assert_eq!(e.code, DenyCode::SignatureMismatch);
    let msg = e
        .headers
        .iter()
        .find(|(n, _)| n == "X-Ca-Error-Message")
        .unwrap();
    assert_eq!(
        msg.1,
        format!(
            "Invalid Signature, Server StringToSign:`{}`",
            A1_STS.replace('\n', "#")
        )
    );
}

#[test]
fn aliyun_1_6_a_form_post_vector() {
    let body = b"nickname=nickname&room_id=6893&uuid=uuid&photo=photo";
    let v = view(
        "POST",
        "http",
        "example.com",
        "/Third/User/getNyAccessToken",
        &[
            ("Accept", "application/json"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Ca-Timestamp", "1646646682418"),
            ("X-Ca-Nonce", "ca5a6753-b76c-4fff-a9d9-e5bb643e8cdf"),
            ("X-Ca-Key", "appKey"),
            (
                "X-Ca-Signature-Headers",
                "x-ca-key,x-ca-nonce,x-ca-timestamp",
            ),
            (
                "X-Ca-Signature",
                "gmf9xq0hc95Hmt+7G+OocS009ka3v1v0rvfshKzYc3w=",
            ),
        ],
        Some(body),
    );
    let sts = aliyun::string_to_sign(
        &v,
        v.headers.get("x-ca-signature-headers"),
        aliyun::Variant::default(),
    );
    assert!(sts.ends_with(
        "\n/Third/User/getNyAccessToken?nickname=nickname&photo=photo&room_id=6893&uuid=uuid"
    ));
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), b"appSecret").unwrap();
    c.check_fresh(&cfg(), &api(), 1_646_646_682_418).unwrap();
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);

    // Without the body the form fields cannot be signed: the signature fails and
    // check_body says it could not look.
    let mut no_body = v.clone();
    no_body.body = None;
    let c = detect(&no_body).unwrap();
    assert_eq!(
        c.verify(&no_body, &cfg(), &api(), b"appSecret")
            .unwrap_err()
            .code,
        DenyCode::SignatureMismatch
    );
    assert_eq!(c.check_body(&no_body).unwrap(), BodyCheck::NotAvailable);
}

#[test]
fn aliyun_1_6_b_doc_string_to_sign() {
    let v = view(
        "POST",
        "https",
        "example.com",
        "/http2test/test?param1=test",
        &[
            ("Accept", "application/json; charset=utf-8"),
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Date", "Wed, 09 May 2018 13:30:29 GMT+00:00"),
            ("X-Ca-Key", "203753385"),
            ("X-Ca-Nonce", "c9f15cbf-f4ac-4a6c-b54d-f51abf4b5b44"),
            ("X-Ca-Signature-Method", "HmacSHA256"),
            ("X-Ca-Timestamp", "1525872629832"),
            (
                "X-Ca-Signature-Headers",
                "x-ca-timestamp,x-ca-key,x-ca-nonce,x-ca-signature-method",
            ),
            (
                "X-Ca-Signature",
                "xfX+bZxY2yl7EB/qdoDy9v/uscw3Nnj1pgoU+Bm6xdM=",
            ),
        ],
        Some(b"username=xiaoming&password=123456789"),
    );
    let expected = "POST\napplication/json; charset=utf-8\n\napplication/x-www-form-urlencoded; charset=utf-8\nWed, 09 May 2018 13:30:29 GMT+00:00\nx-ca-key:203753385\nx-ca-nonce:c9f15cbf-f4ac-4a6c-b54d-f51abf4b5b44\nx-ca-signature-method:HmacSHA256\nx-ca-timestamp:1525872629832\n/http2test/test?param1=test&password=123456789&username=xiaoming";
    let sts = aliyun::string_to_sign(
        &v,
        v.headers.get("x-ca-signature-headers"),
        aliyun::Variant::default(),
    );
    assert_eq!(sts, expected);
    // The AppSecret is unpublished: a mismatch must echo exactly this string.
    let c = detect(&v).unwrap();
    let e = c.verify(&v, &cfg(), &api(), b"not-the-secret").unwrap_err();
    assert!(e.headers.iter().any(|(n, val)| n == "X-Ca-Error-Message" && val.contains(&expected.replace('\n', "#"))));
}

#[test]
fn aliyun_1_6_c_own_sha1_vector() {
    let v = view(
        "GET",
        "https",
        "example.com",
        "/v1/items?b=2&a=&c=x%20y",
        &[
            ("Accept", "application/json"),
            ("X-Ca-Key", "24681357"),
            ("X-Ca-Nonce", "5b4c7a2e-1f0d-4c8e-9a77-3e2f1d0c9b8a"),
            ("X-Ca-Timestamp", "1700000000000"),
            ("X-Ca-Signature-Method", "HmacSHA1"),
            ("X-Ca-Stage", "RELEASE"),
            (
                "X-Ca-Signature-Headers",
                "x-ca-timestamp,x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-stage",
            ),
            ("X-Ca-Signature", "nuYDSdqobYauO0weF/dkfajgfwk="),
        ],
        None,
    );
    let sts = aliyun::string_to_sign(
        &v,
        v.headers.get("x-ca-signature-headers"),
        aliyun::Variant::default(),
    );
    assert_eq!(
        sts.replace('\n', "#"),
        "GET#application/json####x-ca-key:24681357#x-ca-nonce:5b4c7a2e-1f0d-4c8e-9a77-3e2f1d0c9b8a#x-ca-signature-method:HmacSHA1#x-ca-stage:RELEASE#x-ca-timestamp:1700000000000#/v1/items?a&b=2&c=x y"
    );
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), b"exampleAppSecret").unwrap();
    let strict = ApiSchemeOptions {
        require_timestamp_and_nonce: true,
        ..api()
    };
    c.check_fresh(&cfg(), &strict, 1_700_000_000_000).unwrap();
    assert_eq!(
        c.check_fresh(&cfg(), &strict, 1_700_000_000_000 + 900_001)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
}

// === §2.4 Tencent ===

const TENCENT_BODY: &[u8] = br#"{"arg1": "a", "arg2": "b"}"#;

fn tencent_view(alg: &str, sig: &str, md5: &str) -> RequestView {
    let auth = format!(
        r#"hmac id="AKIDexampleApiAppKey", algorithm="{alg}", headers="x-date", signature="{sig}""#
    );
    view(
        "POST",
        "https",
        "service-xxx.gz.apigw.tencentcs.com",
        "/release/data?b=2&a=1",
        &[
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("Content-MD5", md5),
            ("X-Date", "Mon, 19 Mar 2018 12:08:40 GMT"),
            ("Authorization", &auth),
        ],
        Some(TENCENT_BODY),
    )
}

#[test]
fn tencent_2_4_signing_string_and_both_algorithms() {
    let strip = ApiSchemeOptions {
        tencent_strip_env_prefix: true,
        ..api()
    };
    let demo_md5 = "OTg4ZWU5MWUxYjVjNWJkZGRkNWI1N2I3ZjAwYWYwYjg=";
    assert_eq!(tencent::demo_content_md5(TENCENT_BODY), demo_md5);
    let v = tencent_view("hmac-sha1", "MAe6P9ikHz11srkjPuWK/lLcGxs=", demo_md5);
    let sts = tencent::signing_string(&v, &["x-date".to_owned()], true, false);
    assert_eq!(
        sts,
        "x-date: Mon, 19 Mar 2018 12:08:40 GMT\nPOST\napplication/json\napplication/json\nOTg4ZWU5MWUxYjVjNWJkZGRkNWI1N2I3ZjAwYWYwYjg=\n/data?a=1&b=2"
    );
    let now = canonical::parse_http_date_ms("Mon, 19 Mar 2018 12:08:40 GMT").unwrap();
    for (alg, sig) in [
        ("hmac-sha1", "MAe6P9ikHz11srkjPuWK/lLcGxs="),
        (
            "hmac-sha256",
            "s5drS9iMhVItwoybP0WsdxWkztwP4AfNmwtskXqyQAQ=",
        ),
    ] {
        let v = tencent_view(alg, sig, demo_md5);
        let c = detect(&v).unwrap();
        assert_eq!(c.kind(), SchemeKind::Tencent);
        assert_eq!(c.id(), CredentialId::AppKey("AKIDexampleApiAppKey"));
        c.verify(&v, &cfg(), &strip, b"exampleApiAppSecret")
            .unwrap();
        c.check_fresh(&cfg(), &strip, now + 899_000).unwrap();
        assert_eq!(
            c.check_fresh(&cfg(), &strip, now + 901_000)
                .unwrap_err()
                .code,
            DenyCode::TimestampExpired
        );
        assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
        // Without the prefix rule the path is /release/data and the signature fails.
        assert_eq!(
            c.verify(&v, &cfg(), &api(), b"exampleApiAppSecret")
                .unwrap_err()
                .code,
            DenyCode::SignatureMismatch
        );
    }
}

#[test]
fn tencent_2_4_content_md5_both_encodings() {
    for md5 in [
        "OTg4ZWU5MWUxYjVjNWJkZGRkNWI1N2I3ZjAwYWYwYjg=",
        "mI7pHhtcW93dW1e38ArwuA==",
    ] {
        assert!(tencent::content_md5_matches(md5, TENCENT_BODY));
        let v = tencent_view("hmac-sha1", "MAe6P9ikHz11srkjPuWK/lLcGxs=", md5);
        let c = detect(&v).unwrap();
        assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
        let mut tampered = v.clone();
        tampered.body = Some(br#"{"arg1": "a", "arg2": "c"}"#.to_vec());
        assert_eq!(
            c.check_body(&tampered).unwrap_err().code,
            DenyCode::BodyDigestMismatch
        );
    }
}

// === §3.2 BlueKing legacy ===

#[test]
fn bkapi_3_2_legacy_signature() {
    let target = "/api/demo/?x=1&bk_app_code=demo-app&bk_nonce=12345&bk_timestamp=1700000000&bk_signature=tdXqqzBdDNADJMGMTOorZiO06hU%3D";
    let v = view("GET", "http", "bk.example.com", target, &[], None);
    assert_eq!(
        bkapi::legacy_content(&v, false, bkapi::keep_signature_param(v.query.as_deref())),
        b"GET/api/demo/?bk_app_code=demo-app&bk_nonce=12345&bk_timestamp=1700000000&x=1"
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), SchemeKind::Bkapi);
    assert_eq!(c.id(), CredentialId::BkAppCode("demo-app"));
    assert!(!c.sends_secret());
    c.verify(&v, &cfg(), &api(), b"demo-secret").unwrap();
    c.check_fresh(&cfg(), &api(), 1_700_000_000_000 + 299_000)
        .unwrap();
    assert_eq!(c.nonce(), Some("12345"));
    assert_eq!(
        c.check_fresh(&cfg(), &api(), 1_700_000_000_000 + 301_000)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    assert_eq!(
        c.verify(&v, &cfg(), &api(), b"other-secret")
            .unwrap_err()
            .code,
        DenyCode::SignatureMismatch
    );
    assert_eq!(
        c.headers_to_remove(),
        vec!["x-bkapi-authorization".to_owned()]
    );
}

// === §4.5 AWS SigV4 ===

const AWS_SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

#[test]
fn sigv4_4_5_signing_key() {
    let k = sigv4::signing_key(AWS_SECRET, "20120215", "us-east-1", "iam").unwrap();
    assert_eq!(
        hex::encode(k),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn sigv4_4_5_iam_example() {
    let v = view(
        "GET",
        "https",
        "iam.amazonaws.com",
        "/?Action=ListUsers&Version=2010-05-08",
        &[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("X-Amz-Date", "20150830T123600Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        ],
        None,
    );
    let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
        .map(String::from)
        .to_vec();
    let creq = sigv4::canonical_request(
        &v,
        &sigv4::canonical_uri(&v.path, sigv4::UriMode::DoubleEncoded),
        &sigv4::canonical_query(v.query.as_deref(), false, false),
        &signed,
        sigv4::EMPTY_SHA256,
    );
    assert_eq!(
        canonical::sha256_hex(creq.as_bytes()),
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), SchemeKind::SigV4);
    assert_eq!(c.id(), CredentialId::AppKey("AKIDEXAMPLE"));
    c.verify(&v, &cfg(), &api(), AWS_SECRET).unwrap();
    let t = canonical::parse_amz_date("20150830T123600Z").unwrap();
    c.check_fresh(&cfg(), &api(), t + 60_000).unwrap();
    assert_eq!(
        c.check_fresh(&cfg(), &api(), t + 900_001).unwrap_err().code,
        DenyCode::TimestampExpired
    );
    // Region pinned by the API.
    let eu = ApiSchemeOptions {
        sigv4_region: Some("eu-west-1".into()),
        ..api()
    };
    assert_eq!(
        c.verify(&v, &cfg(), &eu, AWS_SECRET).unwrap_err().code,
        DenyCode::Malformed
    );
}

const S3_SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[test]
fn sigv4_4_5_s3_get() {
    let v = view(
        "GET",
        "https",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        &[
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", sigv4::EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ],
        Some(b""),
    );
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), S3_SECRET).unwrap();
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    assert_eq!(c.headers_to_remove(), vec!["authorization".to_owned()]);
}

#[test]
fn sigv4_4_5_s3_presigned() {
    let target = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let v = view(
        "GET",
        "https",
        "examplebucket.s3.amazonaws.com",
        target,
        &[],
        None,
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), SchemeKind::SigV4);
    assert_eq!(c.id(), CredentialId::AppKey("AKIAIOSFODNN7EXAMPLE"));
    c.verify(&v, &cfg(), &api(), S3_SECRET).unwrap();
    let t = canonical::parse_amz_date("20130524T000000Z").unwrap();
    c.check_fresh(&cfg(), &api(), t + 86_400_000).unwrap();
    assert_eq!(
        c.check_fresh(&cfg(), &api(), t + 86_400_001)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::NotCovered);
    assert!(c.headers_to_remove().is_empty());
}

#[test]
fn sigv4_4_5_curl_capture_needs_raw_query_fallback() {
    let body = br#"{"hello":"world"}"#;
    let sig = "064fc7f922ec11cf7c2a0d824690ef6433a5390e4b1b5da6d456a76d2b6e70a8";
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261122/us-east-1/execute-api/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={sig}"
    );
    let v = view(
        "POST",
        "http",
        "127.0.0.1:18765",
        "/v1/items?b=2&a=1&c=x%20y",
        &[
            ("Content-Type", "application/json"),
            ("X-Amz-Date", "20261122T100920Z"),
            ("Authorization", &auth),
        ],
        Some(body),
    );
    assert_eq!(
        canonical::sha256_hex(body),
        "93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588"
    );
    let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
        .map(String::from)
        .to_vec();
    let raw = sigv4::canonical_request(
        &v,
        "/v1/items",
        "b=2&a=1&c=x%20y",
        &signed,
        &canonical::sha256_hex(body),
    );
    assert_eq!(
        raw,
        "POST\n/v1/items\nb=2&a=1&c=x%20y\ncontent-type:application/json\nhost:127.0.0.1:18765\nx-amz-date:20261122T100920Z\n\ncontent-type;host;x-amz-date\n93a23971a914e5eacbf0a8d25154cda309c3c1c72fbb9914d47c60f3cb681588"
    );
    let key = sigv4::signing_key(AWS_SECRET, "20261122", "us-east-1", "execute-api").unwrap();
    let scope = sigv4::scope("20261122", "us-east-1", "execute-api");
    assert_eq!(
        sigv4::signature_hex(
            &key,
            &sigv4::string_to_sign("20261122T100920Z", &scope, &raw)
        )
        .unwrap(),
        sig
    );
    // The strict canonical request (sorted query) does not give curl's signature...
    let strict_query = sigv4::canonical_query(v.query.as_deref(), false, false);
    assert_eq!(strict_query, "a=1&b=2&c=x%20y");
    let strict = sigv4::canonical_request(
        &v,
        &sigv4::canonical_uri(&v.path, sigv4::UriMode::DoubleEncoded),
        &strict_query,
        &signed,
        &canonical::sha256_hex(body),
    );
    assert_ne!(
        sigv4::signature_hex(
            &key,
            &sigv4::string_to_sign("20261122T100920Z", &scope, &strict)
        )
        .unwrap(),
        sig
    );
    // ...but the verifier accepts it through the raw-query fallback.
    let c = detect(&v).unwrap();
    c.verify(&v, &cfg(), &api(), AWS_SECRET).unwrap();
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
}

// === §5.1 RFC 9421 ===

#[test]
fn rfc9421_b_2_5_vendor_vector() {
    let key = canonical::b64_decode(
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==",
    )
    .unwrap();
    let v = view(
        "POST",
        "https",
        "example.com",
        "/foo",
        &[
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            (
                "Signature-Input",
                r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
            ),
            (
                "Signature",
                "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
            ),
        ],
        None,
    );
    let input = v.headers.get("signature-input").unwrap();
    let dict = rfc9421::sf::parse_dictionary(input).unwrap();
    let rfc9421::sf::Member::Inner { items, raw, .. } = &dict[0].1 else {
        panic!("inner list expected")
    };
    assert_eq!(
        rfc9421::signature_base(&v, items, raw).unwrap(),
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.kind(), SchemeKind::Rfc9421);
    assert_eq!(c.id(), CredentialId::AppKey("test-shared-secret"));
    // B.2.5 covers neither @method nor @path: verify under a policy that requires nothing.
    let lax = SchemeConfig {
        rfc9421_required: Vec::new(),
        ..cfg()
    };
    c.verify(&v, &lax, &api(), &key).unwrap();
    assert_eq!(
        c.verify(&v, &cfg(), &api(), &key).unwrap_err().code,
        DenyCode::Malformed
    );
    assert_eq!(
        c.verify(&v, &lax, &api(), b"test-shared-secret")
            .unwrap_err()
            .code,
        DenyCode::SignatureMismatch
    );
}

#[test]
fn rfc9421_content_digest_sha512_from_the_rfc() {
    let body = br#"{"hello": "world"}"#;
    let v = view(
        "POST",
        "https",
        "example.com",
        "/foo",
        &[
            (
                "Content-Digest",
                "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
            ),
            (
                "Signature-Input",
                r#"sig1=("@method" "content-digest");created=1;keyid="k""#,
            ),
            ("Signature", "sig1=:AAAA:"),
        ],
        Some(body),
    );
    assert_eq!(
        detect(&v).unwrap().check_body(&v).unwrap(),
        BodyCheck::Verified
    );
}

#[test]
fn rfc9421_own_example() {
    let body = br#"{"hello": "world"}"#;
    assert_eq!(
        rfc9421::content_digest(body),
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    );
    let v = view(
        "POST",
        "https",
        "api.example.com",
        "/v1/orders?b=2&a=1",
        &[
            ("Content-Type", "application/json"),
            (
                "Content-Digest",
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            ),
            (
                "Signature-Input",
                r#"sig1=("@method" "@authority" "@path" "@query" "content-type" "content-digest");created=1700000000;expires=1700000300;nonce="n-0001";keyid="app-123";alg="hmac-sha256""#,
            ),
            (
                "Signature",
                "sig1=:FKSwjF0FoomeV+ZAtAZN3Os7svRI+xbaXFEKSgMa32Y=:",
            ),
        ],
        Some(body),
    );
    let c = detect(&v).unwrap();
    assert_eq!(c.id(), CredentialId::AppKey("app-123"));
    c.verify(&v, &cfg(), &api(), b"example-shared-secret-32-bytes!!")
        .unwrap();
    c.check_fresh(&cfg(), &api(), 1_700_000_000_000).unwrap();
    assert_eq!(
        c.check_fresh(&cfg(), &api(), 1_700_000_300_001)
            .unwrap_err()
            .code,
        DenyCode::TimestampExpired
    );
    assert_eq!(c.nonce(), Some("n-0001"));
    assert_eq!(c.check_body(&v).unwrap(), BodyCheck::Verified);
    assert_eq!(
        c.headers_to_remove(),
        vec!["signature".to_owned(), "signature-input".to_owned()]
    );
    let mut tampered = v.clone();
    tampered.body = Some(br#"{"hello": "world!"}"#.to_vec());
    assert_eq!(
        c.check_body(&tampered).unwrap_err().code,
        DenyCode::BodyDigestMismatch
    );
}

// === Captures from other signers ===

/// Requests signed by real third-party signers (botocore's `SigV4Auth`, `S3SigV4Auth`,
/// `S3SigV4QueryAuth`, `SigV4QueryAuth`; curl 7.88.1 `--aws-sigv4` captured on a local
/// socket; Python `http-message-signatures` 3.0.0 with HMAC-SHA256), recorded once.
/// Each must pass `detect` → `verify` → `check_body`. Freshness is not checked (the
/// captures carry their recording time).
const INTEROP: &str = r#"[
{"name":"boto_execute_api_post","method":"POST","url":"https://abc.execute-api.us-east-1.amazonaws.com/prod/items/a%20b/%C3%A9?z=1&a=2&a=1&sp=x%20y&plus=a%2Bb&empty=","headers":[["Content-Type","application/json"],["X-Custom","  a   b  "],["X-Amz-Date","20261122T105730Z"],["Authorization","AWS4-HMAC-SHA256 Credential=AKIDINTEROP/20261122/us-east-1/execute-api/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-custom, Signature=a5c6b16c308735f92dc03240add1da1ed87047944aa682ba7ed9eb5061aeba2f"]],"body":"eyJrIjogInYifQ==","secret":"interop/Secret+Key=0","source":"botocore 1.43.11"},
{"name":"boto_iam_get_dot_segments","method":"GET","url":"https://iam.amazonaws.com/a/./b/../c//d?Action=ListUsers&Version=2010-05-08","headers":[["X-Amz-Date","20261122T105730Z"],["Authorization","AWS4-HMAC-SHA256 Credential=AKIDINTEROP/20261122/us-east-1/iam/aws4_request, SignedHeaders=host;x-amz-date, Signature=1cf8742597c3ae49c1a6410520d7917bfddae7d56663acbeb81095872da0b1ec"]],"secret":"interop/Secret+Key=0","source":"botocore 1.43.11"},
{"name":"boto_s3_put","method":"PUT","url":"https://bucket.s3.amazonaws.com/dir/my%20file%2Bv1.txt?x-id=PutObject","headers":[["Content-Type","text/plain"],["X-Amz-Date","20261122T105730Z"],["X-Amz-Content-SHA256","f2ff189a4ef686231302becc266e6c8d5eee814b868d11631f7660073fc9b613"],["Authorization","AWS4-HMAC-SHA256 Credential=AKIDINTEROP/20261122/us-east-1/s3/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=26ee159a62693b5c84ddee390d3d6f3296dc6d3cda56e4b2e5a360e4e7c062a5"]],"body":"aGVsbG8gczM=","secret":"interop/Secret+Key=0","source":"botocore 1.43.11"},
{"name":"boto_s3_presigned_get","method":"GET","url":"https://bucket.s3.amazonaws.com/dir/my%20file.txt?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDINTEROP%2F20261122%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261122T105730Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature=df5c6ee9d5a2577ab1d551e063e06da5711c8f3c48661a91d58837d63b2eb524","headers":[],"secret":"interop/Secret+Key=0","source":"botocore 1.43.11"},
{"name":"boto_query_presigned_execute_api","method":"GET","url":"https://abc.execute-api.us-east-1.amazonaws.com/prod/x?b=2&a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDINTEROP%2F20261122%2Fus-east-1%2Fexecute-api%2Faws4_request&X-Amz-Date=20261122T105730Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=717eb1733cdfddc91d8604cd5a84b9c9e659bc0cb73f23c1f7884953790937d9","headers":[],"secret":"interop/Secret+Key=0","source":"botocore 1.43.11"},
{"method":"POST","headers":[["Authorization","AWS4-HMAC-SHA256 Credential=AKIDCURL/20261122/us-east-1/execute-api/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=807893cdb369c67562a874736c4e125e6d3515d801cc48aa2896cadd8859d9c2"],["X-Amz-Date","20261122T105757Z"],["Content-Type","application/json"]],"body":"eyJoZWxsbyI6IndvcmxkIn0=","name":"curl_post_json_unsorted_query","url":"http://127.0.0.1:40897/v1/items?b=2&a=1&c=x%20y","secret":"curl/Secret+Key","source":"curl 7.88.1 --aws-sigv4"},
{"method":"GET","headers":[["Authorization","AWS4-HMAC-SHA256 Credential=AKIDCURL/20261122/eu-west-1/svc/aws4_request, SignedHeaders=host;x-amz-date, Signature=43af2523536153ee0a6d21aeb6fc97ea3a83cc7808e56115d1fd9ad2ba733551"],["X-Amz-Date","20261122T105757Z"]],"name":"curl_get_plain","url":"http://127.0.0.1:40897/v1/a%20b/c","secret":"curl/Secret+Key","source":"curl 7.88.1 --aws-sigv4"},
{"method":"PUT","headers":[["Authorization","AWS4-HMAC-SHA256 Credential=AKIDCURL/20261122/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date;x-extra, Signature=db1f17062d46acb8bbfa2f93d79182c09418d0e671806cce99360fcd04af9b09"],["X-Amz-Date","20261122T105757Z"],["X-Extra","  spaced   value "],["Content-Type","application/x-www-form-urlencoded"]],"body":"ZmlsZSBib2R5","name":"curl_s3_put","url":"http://127.0.0.1:40897/bucket/my%20key.txt?x-id=PutObject","secret":"curl/Secret+Key","source":"curl 7.88.1 --aws-sigv4"},
{"method":"POST","headers":[["Authorization","AWS4-HMAC-SHA256 Credential=AKIDCURL/20261122/us-east-1/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=cc478bf0511f601fe4343df578d675fd4ba49d4e80bff24013ffb4ee2cadcefd"],["X-Amz-Date","20261122T105757Z"],["Content-Type","application/x-www-form-urlencoded"]],"body":"YT0xJmI9Mg==","name":"curl_form_default_ct","url":"http://127.0.0.1:40897/form?z=9&plus=a+b","secret":"curl/Secret+Key","source":"curl 7.88.1 --aws-sigv4"},
{"name":"py_post","method":"POST","url":"https://api.example.com:443/v1/orders?b=2&a=1","headers":[["Content-Type","application/json"],["Content-Digest","sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"],["Signature-Input","pysig=(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-type\" \"content-digest\");created=1700000000;keyid=\"py-key\";alg=\"hmac-sha256\";nonce=\"abc\""],["Signature","pysig=:Uo6mPv/mul45hF+mecaGkGuOXNHItPwWBeGbnj7IXPY=:"]],"body":"eyJoZWxsbyI6ICJ3b3JsZCJ9","secret":"interop-shared-secret","source":"http-message-signatures 3.0.0"},
{"name":"py_target_uri","method":"GET","url":"https://example.com/x/y?q=a%20b&r=1","headers":[["Signature-Input","pysig=(\"@method\" \"@target-uri\" \"@scheme\" \"@request-target\");created=1700000000;keyid=\"py-key\";alg=\"hmac-sha256\""],["Signature","pysig=:OOsCO3CJOfZ0VF+9s/EVKz363inMDxQhB4dnforbRp4=:"]],"secret":"interop-shared-secret","source":"http-message-signatures 3.0.0"},
{"name":"py_query_param","method":"GET","url":"https://example.com/x?param=value&foo=bar&baz=bat-man&qux=&var=this%20is%20a%20big%0Avalue&bar=with+plus+whitespace","headers":[["Signature-Input","pysig=(\"@method\" \"@authority\" \"@path\" \"@query\" \"@query-param\";name=\"baz\" \"@query-param\";name=\"var\" \"@query-param\";name=\"bar\" \"@query-param\";name=\"qux\");created=1700000000;keyid=\"py-key\";alg=\"hmac-sha256\""],["Signature","pysig=:so1FuQRU9IuvS6v/rPVTTsbtPwuyscUdjWwgcY4scfA=:"]],"secret":"interop-shared-secret","source":"http-message-signatures 3.0.0"}
]"#;

#[test]
fn interop_captures_from_other_signers_verify() {
    use base64::Engine as _;
    let cases: serde_json::Value = serde_json::from_str(INTEROP).unwrap();
    let lax = SchemeConfig {
        rfc9421_required: Vec::new(),
        ..cfg()
    };
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let url = case["url"].as_str().unwrap();
        let (scheme, rest) = url.split_once("://").unwrap();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, target) = rest.split_at(split);
        let headers: Vec<(&str, &str)> = case["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap()))
            .collect();
        let body = case.get("body").map(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.as_str().unwrap())
                .unwrap()
        });
        let v = view(
            case["method"].as_str().unwrap(),
            scheme,
            host,
            target,
            &headers,
            body.as_deref(),
        );
        let c = detect(&v).unwrap_or_else(|d| panic!("{name}: {d:?}"));
        let secret = case["secret"].as_str().unwrap().as_bytes();
        c.verify(&v, &lax, &api(), secret)
            .unwrap_or_else(|d| panic!("{name}: {d:?}"));
        let bc = c.check_body(&v).unwrap_or_else(|d| panic!("{name}: {d:?}"));
        if body.as_deref().is_some_and(|b| !b.is_empty()) && !url.contains("X-Amz-Signature") {
            assert_eq!(bc, BodyCheck::Verified, "{name}");
        }
        assert_eq!(
            c.verify(&v, &lax, &api(), b"wrong").unwrap_err().code,
            DenyCode::SignatureMismatch,
            "{name}"
        );
    }
}
