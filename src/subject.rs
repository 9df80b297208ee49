//! Client-certificate subjects as admin principals name them.
//!
//! Owns: the one canonical form of a distinguished name, built both from the text an
//! operator writes (`CN=ci-deployer, O=acme`) and from a verified certificate's DER,
//! so that the two compare as strings. The canonical form lists every attribute as
//! `TYPE=value`, types in their usual spelling (`CN`, `O`, `OU`, `C`, `L`, `ST`,
//! `STREET`, `DC`, `UID`, `serialNumber`, `emailAddress`, else the dotted OID), sorted,
//! joined by `,`, with `\`, `,`, `+` and `=` escaped in values. Sorting makes the
//! comparison independent of the order tools print a DN in (OpenSSL's RFC 2253 output
//! is reversed); the attributes and values themselves must match exactly, since an
//! identity is whatever the trusted CA wrote into the certificate.

/// Known attribute types: (OID, canonical spelling).
const TYPES: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

/// At most this many attributes, and this many bytes of text.
const MAX_ATTRIBUTES: usize = 32;
const MAX_LEN: usize = 1024;

/// The canonical form of a subject an operator wrote, or why it is not one.
pub fn parse(text: &str) -> Result<String, String> {
    if text.len() > MAX_LEN {
        return Err(format!("at most {MAX_LEN} bytes"));
    }
    let mut attrs = Vec::new();
    for part in split_unescaped(text, &[',', '+'])? {
        let (ty, value) = match split_unescaped(&part, &['='])?.as_slice() {
            [ty, ..] if part.len() > ty.len() => {
                (ty.trim().to_owned(), part[ty.len() + 1..].to_owned())
            }
            _ => return Err(format!("'{}' is not TYPE=value", part.trim())),
        };
        let value = unescape(value.trim());
        if value.is_empty() {
            return Err(format!("{ty} has an empty value"));
        }
        attrs.push((canonical_type(&ty)?, value));
    }
    finish(attrs).ok_or_else(|| "names no attribute (e.g. CN=ci-deployer,O=acme)".to_owned())
}

/// The canonical subject of a DER certificate, or `None` when it has none keygate can
/// name (no attributes, or a value that is not a string).
pub fn of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut attrs = Vec::new();
    for a in cert.subject().iter_attributes() {
        let oid = a.attr_type().to_id_string();
        let ty = TYPES
            .iter()
            .find(|(o, _)| *o == oid)
            .map_or(oid.clone(), |(_, name)| (*name).to_owned());
        attrs.push((ty, a.as_str().ok()?.to_owned()));
    }
    finish(attrs)
}

fn finish(mut attrs: Vec<(String, String)>) -> Option<String> {
    if attrs.is_empty() || attrs.len() > MAX_ATTRIBUTES {
        return None;
    }
    attrs.sort();
    Some(
        attrs
            .iter()
            .map(|(t, v)| format!("{t}={}", escape(v)))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn canonical_type(ty: &str) -> Result<String, String> {
    if let Some((_, name)) = TYPES.iter().find(|(_, n)| n.eq_ignore_ascii_case(ty)) {
        return Ok((*name).to_owned());
    }
    let dotted = ty.split('.').count() >= 2
        && ty
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !dotted {
        return Err(format!(
            "unknown attribute type '{ty}' (CN, O, OU, C, L, ST, STREET, DC, UID, serialNumber, emailAddress, or a dotted OID)"
        ));
    }
    Ok(TYPES
        .iter()
        .find(|(o, _)| *o == ty)
        .map_or(ty.to_owned(), |(_, name)| (*name).to_owned()))
}

/// Splits on any of `seps` not preceded by a backslash; escapes stay in the parts.
fn split_unescaped(text: &str, seps: &[char]) -> Result<Vec<String>, String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().ok_or("empty")?;
        if c == '\\' {
            let next = chars.next().ok_or("a trailing '\\' escapes nothing")?;
            if next.is_ascii_hexdigit() {
                // RFC 4514's \XX form (OpenSSL prints non-ASCII that way): refused, not
                // misread as other characters that would name another identity.
                return Err(
                    "hex escapes (\\XX) are not supported: write the character itself".into(),
                );
            }
            part.push(c);
            part.push(next);
        } else if seps.contains(&c) {
            parts.push(String::new());
        } else {
            part.push(c);
        }
    }
    if seps.contains(&',') && parts.iter().any(|p| p.trim().is_empty()) {
        return Err("an empty attribute (two separators in a row?)".into());
    }
    Ok(parts)
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '+' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_spacing_and_type_case_do_not_matter() {
        let want = "CN=ci-deployer,O=acme,OU=platform";
        for text in [
            "CN=ci-deployer,O=acme,OU=platform",
            "ou=platform, o=acme, cn=ci-deployer",
            " O = acme ,CN=ci-deployer+OU=platform",
            "2.5.4.3=ci-deployer,2.5.4.10=acme,2.5.4.11=platform",
        ] {
            assert_eq!(parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn values_keep_their_case_and_escapes() {
        assert_eq!(
            parse(r"O=Acme\, Inc.,CN=Ops").unwrap(),
            r"CN=Ops,O=Acme\, Inc."
        );
        assert_ne!(parse("CN=ops").unwrap(), parse("CN=Ops").unwrap());
        assert_eq!(
            parse("1.3.6.1.4.1.99=x").unwrap(),
            "1.3.6.1.4.1.99=x",
            "unknown OIDs are kept dotted"
        );
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for bad in [
            "",
            "CN",
            "CN=",
            "XX=1",
            "CN=a,,O=b",
            "CN=a\\",
            "1..2=x",
            r"CN=Jos\C3\A9",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_certificate_subject_matches_its_text() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ci-deployer");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            of_certificate(cert.der()).as_deref(),
            Some(parse("CN=ci-deployer, O=acme").unwrap().as_str())
        );
        assert_eq!(of_certificate(b"not DER"), None);
    }
}
