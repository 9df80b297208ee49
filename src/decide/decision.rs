//! The outcome of a check: `Decision`, and the `Allow` whose constructor only the
//! pipeline in `decide` can reach. The deny vocabulary lives in [`crate::deny`].

use crate::deny::{Deny, DenyCode};

/// A granted request. Only `decide` can build one (the private field), so no front door
/// or scheme can let a request through by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub app_id: String,
    /// AppKey of the key pair that signed, empty for AppCode.
    pub app_key: String,
    pub api_id: String,
    pub stage: String,
    pub scheme: &'static str,
    /// Headers to set upstream, overwriting any client-sent copy.
    pub headers_to_set: Vec<(String, String)>,
    /// Request headers to drop before the request goes upstream.
    pub headers_to_remove: Vec<String>,
    /// Query parameters that carried the credential, to drop before upstream.
    pub query_params_to_remove: Vec<String>,
    pub(in crate::decide) sealed: Sealed,
}

/// Proof that an `Allow` was built inside `decide`: nothing else can make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed(pub(in crate::decide) ());

/// The answer to "may this request pass?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The deny code, or `None` for an allow.
    pub fn deny_code(&self) -> Option<DenyCode> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.code),
        }
    }
}

impl From<Deny> for Decision {
    fn from(d: Deny) -> Self {
        Decision::Deny(d)
    }
}
