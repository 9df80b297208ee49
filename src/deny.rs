//! Why a request was denied: `DenyCode`, `DenyStatus` and `Deny`.
//!
//! Owns: the stable deny codes (their names are a public contract: JSON body,
//! `x-keygate-error`, logs and metric labels all use `DenyCode::as_str`) and the one
//! mapping from a code to an HTTP status and a gRPC code. Vocabulary shared by the
//! schemes, the pipeline and the front doors: it imports nothing of keygate's.

use std::fmt;

/// Why a request was denied. Names are stable: clients and dashboards match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyCode {
    /// No credential of any known scheme.
    MissingCredential,
    /// Credential headers present but unparseable or contradictory.
    Malformed,
    /// The API does not accept the scheme the request used.
    SchemeNotAllowed,
    UnknownAppKey,
    UnknownAppCode,
    AppDisabled,
    KeyDisabled,
    KeyExpired,
    SignatureMismatch,
    /// Unsupported signature algorithm (e.g. `X-Ca-Signature-Method: HmacMD5`).
    UnsupportedAlgorithm,
    TimestampMissing,
    TimestampExpired,
    NonceMissing,
    NonceReplayed,
    /// The replay cache is full: refusing beats forgetting a nonce still in its window.
    ReplayCacheFull,
    /// The nonce store cannot answer (unreachable, timed out, failing writes) or has
    /// lost nonces that may still be live: refusing beats accepting a replay.
    ReplayUnavailable,
    BodyDigestMismatch,
    /// The API requires a body digest and the request carries none (or the body was
    /// not available to check it).
    BodyDigestMissing,
    /// The body was cut by the proxy's buffer limit, so a body signature cannot be checked.
    BodyIncomplete,
    BodyTooLarge,
    /// Too many request headers, or too many header bytes (path and query included).
    HeadersTooLarge,
    ApiNotFound,
    NoGrant,
    GrantExpired,
    /// The API requires user authentication and the request carries no user token.
    UserMissing,
    /// The request's user token is not valid: not a JWT, an algorithm or key not
    /// accepted, a wrong signature, issuer or audience, no user claim.
    UserInvalid,
    /// The request's user token is outside its validity (`exp` passed or `nbf` not
    /// reached, beyond the leeway).
    UserExpired,
    /// The service is shedding load.
    Overloaded,
    /// The request was not received (a slow body) and decided within the call's
    /// time limit.
    RequestTimeout,
    /// An internal fault; fail closed.
    Internal,
}

/// How a deny is expressed on each wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyStatus {
    pub http: u16,
    pub grpc: tonic::Code,
}

impl DenyCode {
    pub const ALL: [DenyCode; 30] = [
        DenyCode::MissingCredential,
        DenyCode::Malformed,
        DenyCode::SchemeNotAllowed,
        DenyCode::UnknownAppKey,
        DenyCode::UnknownAppCode,
        DenyCode::AppDisabled,
        DenyCode::KeyDisabled,
        DenyCode::KeyExpired,
        DenyCode::SignatureMismatch,
        DenyCode::UnsupportedAlgorithm,
        DenyCode::TimestampMissing,
        DenyCode::TimestampExpired,
        DenyCode::NonceMissing,
        DenyCode::NonceReplayed,
        DenyCode::ReplayCacheFull,
        DenyCode::ReplayUnavailable,
        DenyCode::BodyDigestMismatch,
        DenyCode::BodyDigestMissing,
        DenyCode::BodyIncomplete,
        DenyCode::BodyTooLarge,
        DenyCode::HeadersTooLarge,
        DenyCode::ApiNotFound,
        DenyCode::NoGrant,
        DenyCode::GrantExpired,
        DenyCode::UserMissing,
        DenyCode::UserInvalid,
        DenyCode::UserExpired,
        DenyCode::Overloaded,
        DenyCode::RequestTimeout,
        DenyCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MissingCredential => "MissingCredential",
            DenyCode::Malformed => "Malformed",
            DenyCode::SchemeNotAllowed => "SchemeNotAllowed",
            DenyCode::UnknownAppKey => "UnknownAppKey",
            DenyCode::UnknownAppCode => "UnknownAppCode",
            DenyCode::AppDisabled => "AppDisabled",
            DenyCode::KeyDisabled => "KeyDisabled",
            DenyCode::KeyExpired => "KeyExpired",
            DenyCode::SignatureMismatch => "SignatureMismatch",
            DenyCode::UnsupportedAlgorithm => "UnsupportedAlgorithm",
            DenyCode::TimestampMissing => "TimestampMissing",
            DenyCode::TimestampExpired => "TimestampExpired",
            DenyCode::NonceMissing => "NonceMissing",
            DenyCode::NonceReplayed => "NonceReplayed",
            DenyCode::ReplayCacheFull => "ReplayCacheFull",
            DenyCode::ReplayUnavailable => "ReplayUnavailable",
            DenyCode::BodyDigestMismatch => "BodyDigestMismatch",
            DenyCode::BodyDigestMissing => "BodyDigestMissing",
            DenyCode::BodyIncomplete => "BodyIncomplete",
            DenyCode::BodyTooLarge => "BodyTooLarge",
            DenyCode::HeadersTooLarge => "HeadersTooLarge",
            DenyCode::ApiNotFound => "ApiNotFound",
            DenyCode::NoGrant => "NoGrant",
            DenyCode::GrantExpired => "GrantExpired",
            DenyCode::UserMissing => "UserMissing",
            DenyCode::UserInvalid => "UserInvalid",
            DenyCode::UserExpired => "UserExpired",
            DenyCode::Overloaded => "Overloaded",
            DenyCode::RequestTimeout => "RequestTimeout",
            DenyCode::Internal => "Internal",
        }
    }

    /// The one mapping from a deny to wire statuses.
    ///
    /// 401: the caller has not proven who it is. 403: a proven identity without the
    /// right. 400: the request itself is malformed (keygate's convention, not any
    /// vendor's; vendor error headers are added by the schemes).
    pub fn status(self) -> DenyStatus {
        use tonic::Code;
        let (http, grpc) = match self {
            DenyCode::MissingCredential
            | DenyCode::UnknownAppKey
            | DenyCode::UnknownAppCode
            | DenyCode::KeyDisabled
            | DenyCode::KeyExpired
            | DenyCode::SignatureMismatch
            | DenyCode::TimestampMissing
            | DenyCode::TimestampExpired
            | DenyCode::NonceMissing
            | DenyCode::NonceReplayed
            | DenyCode::UserMissing
            | DenyCode::UserInvalid
            | DenyCode::UserExpired => (401, Code::Unauthenticated),
            DenyCode::AppDisabled
            | DenyCode::SchemeNotAllowed
            | DenyCode::ApiNotFound
            | DenyCode::NoGrant
            | DenyCode::GrantExpired => (403, Code::PermissionDenied),
            DenyCode::Malformed
            | DenyCode::UnsupportedAlgorithm
            | DenyCode::BodyDigestMismatch
            | DenyCode::BodyDigestMissing
            | DenyCode::BodyIncomplete => (400, Code::InvalidArgument),
            DenyCode::BodyTooLarge => (413, Code::InvalidArgument),
            DenyCode::HeadersTooLarge => (431, Code::InvalidArgument),
            DenyCode::RequestTimeout => (408, Code::DeadlineExceeded),
            DenyCode::ReplayCacheFull | DenyCode::Overloaded => (503, Code::ResourceExhausted),
            DenyCode::Internal | DenyCode::ReplayUnavailable => (503, Code::Unavailable),
        };
        DenyStatus { http, grpc }
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A denied request: a stable code, a human message, and headers for the client
/// (e.g. a vendor's `X-Ca-Error-Message` so its SDK can show the StringToSign).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub message: String,
    pub headers: Vec<(String, String)>,
    /// The scheme whose credential the request carried (its name, which is also its
    /// metric label); `None` when the deny came before one was found.
    pub scheme: Option<&'static str>,
    /// The app whose signature verified before the request was denied (a disabled app,
    /// no grant, a replay...); `None` when the caller never proved who it is.
    pub app_id: Option<String>,
}

impl Deny {
    pub fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            headers: Vec::new(),
            scheme: None,
            app_id: None,
        }
    }

    /// The same deny, naming the app that proved its identity.
    pub fn for_app(mut self, app_id: &str) -> Self {
        self.app_id = Some(app_id.to_owned());
        self
    }

    /// The same deny, attributed to the scheme named `scheme`.
    pub fn for_scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = Some(scheme);
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}
