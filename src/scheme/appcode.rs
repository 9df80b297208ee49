//! Alibaba AppCode simple authentication (`Authorization: APPCODE <code>`), spec §1.7.
//!
//! Owns: parsing the code from the header or the `AppCode` query parameter, the
//! constant-time comparison, and the `A401AC` / `A400AC` answers.
//!
//! # Decisions
//! * The scheme word is matched case-insensitively, followed by one or more spaces;
//!   the code is the rest, trimmed; an empty code is `Malformed`.
//! * The query form `AppCode=<code>` (exact, case-sensitive name, per the current
//!   Alibaba doc) is accepted when no header credential is present. It is listed in
//!   `query_params_to_remove` because it is a secret the backend must not see.
//! * The pipeline's lookup by code *is* the check; `verify` is still correct on its own
//!   (constant-time equality with the candidate secret).

use zeroize::Zeroizing;

use crate::deny::{Deny, DenyCode};
use crate::request::RequestView;

use super::{aliyun, canonical, deny};

/// Name of the query parameter that may carry the AppCode.
pub const QUERY_PARAM: &str = "AppCode";

pub(crate) struct AppCodeCredential {
    code: Zeroizing<String>,
    in_query: bool,
}

fn malformed(msg: &str) -> Deny {
    deny(DenyCode::Malformed, msg.to_owned())
        .with_header("X-Ca-Error-Code", "A400AC")
        .with_header("X-Ca-Error-Message", "Invalid AppCode")
}

/// Extracts the code from an `Authorization` value; `None` unless it is `APPCODE <code>`.
pub fn parse_header_value(value: &str) -> Option<&str> {
    let v = value.trim();
    let word = v.get(..7)?;
    if !word.eq_ignore_ascii_case("APPCODE") {
        return None;
    }
    let rest = v.get(7..)?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let code = rest.trim();
    (!code.is_empty()).then_some(code)
}

impl AppCodeCredential {
    pub(crate) fn from_header(view: &RequestView) -> Result<Self, Deny> {
        let value = view.headers.get("authorization").unwrap_or("");
        let code = parse_header_value(value)
            .ok_or_else(|| malformed("Authorization: APPCODE needs a code"))?;
        Ok(Self {
            code: Zeroizing::new(code.to_owned()),
            in_query: false,
        })
    }

    pub(crate) fn from_query(view: &RequestView) -> Result<Self, Deny> {
        let q = view.query.as_deref();
        if canonical::query_param_count(q, QUERY_PARAM) > 1 {
            return Err(malformed("AppCode given more than once"));
        }
        let code = canonical::query_param(q, QUERY_PARAM).unwrap_or_default();
        let code = code.trim();
        if code.is_empty() {
            return Err(malformed("AppCode query parameter is empty"));
        }
        Ok(Self {
            code: Zeroizing::new(code.to_owned()),
            in_query: true,
        })
    }

    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    pub(crate) fn verify(&self, secret: &[u8]) -> Result<(), Deny> {
        if canonical::ct_eq(self.code.as_bytes(), secret) {
            Ok(())
        } else {
            Err(deny(DenyCode::UnknownAppCode, "Invalid AppCode")
                .with_header("X-Ca-Error-Code", "A401AC")
                .with_header("X-Ca-Error-Message", "Invalid AppCode"))
        }
    }

    pub(crate) fn headers_to_remove(&self) -> &'static [&'static str] {
        if self.in_query {
            &[]
        } else {
            &["authorization"]
        }
    }

    pub(crate) fn query_params_to_remove(&self) -> Vec<String> {
        if self.in_query {
            vec![QUERY_PARAM.to_owned()]
        } else {
            Vec::new()
        }
    }
}

pub(crate) fn decorate(deny: Deny) -> Deny {
    let deny = match deny.code {
        DenyCode::UnknownAppCode => super::add_header_once(deny, "X-Ca-Error-Code", "A401AC"),
        DenyCode::Malformed => super::add_header_once(deny, "X-Ca-Error-Code", "A400AC"),
        _ => deny,
    };
    let deny = match deny.code {
        DenyCode::UnknownAppCode | DenyCode::Malformed => {
            super::add_header_once(deny, "X-Ca-Error-Message", "Invalid AppCode")
        }
        _ => deny,
    };
    aliyun::decorate(deny)
}
