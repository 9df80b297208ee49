//! Proto <-> model conversion and field validation for the admin API.
//!
//! Owns: every rule on what a client may send (lengths, character sets, templates,
//! timestamps, field masks), reported as `INVALID_ARGUMENT` naming the field, and the
//! rule that secrets leave only in the responses that create or reset them.

use std::collections::BTreeMap;

use prost_types::{FieldMask, Timestamp};

use super::status::{AdminError, invalid};
use crate::model;
use crate::pb::admin as pb;
use crate::route::Template;
use crate::scheme::SchemeKind;

pub type R<T> = Result<T, AdminError>;

// === time ===

pub fn ts(ms: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    })
}

pub fn opt_ts(ms: Option<i64>) -> Option<Timestamp> {
    ms.and_then(ts)
}

pub fn ms_of(field: &str, t: &Timestamp) -> R<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) || !(0..=253_402_300_799).contains(&t.seconds) {
        return Err(invalid(field, "not a valid timestamp (years 1970 to 9999)"));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

pub fn opt_ms_of(field: &str, t: Option<&Timestamp>) -> R<Option<i64>> {
    t.map(|t| ms_of(field, t)).transpose()
}

pub fn duration_ms(field: &str, d: Option<&prost_types::Duration>) -> R<i64> {
    let Some(d) = d else { return Ok(0) };
    if d.seconds < 0 || d.nanos < 0 || d.seconds > 365 * 86_400 {
        return Err(invalid(field, "must be between 0 and 365 days"));
    }
    Ok(d.seconds * 1000 + i64::from(d.nanos / 1_000_000))
}

// === field rules ===

fn required(field: &str, v: &str) -> R<()> {
    if v.trim().is_empty() {
        return Err(invalid(field, "required"));
    }
    Ok(())
}

/// Display text: bounded, no control characters (they break logs and headers).
pub fn text(field: &str, v: &str, max: usize) -> R<()> {
    if v.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

pub fn name(field: &str, v: &str) -> R<()> {
    required(field, v)?;
    text(field, v, 128)
}

fn charset(
    field: &str,
    v: &str,
    min: usize,
    max: usize,
    ok: impl Fn(u8) -> bool,
    what: &str,
) -> R<()> {
    if v.len() < min || v.len() > max || !v.bytes().all(ok) {
        return Err(invalid(
            field,
            format!("must be {min} to {max} characters of {what}"),
        ));
    }
    Ok(())
}

pub fn app_id(field: &str, v: &str) -> R<()> {
    charset(
        field,
        v,
        1,
        64,
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-',
        "[a-z0-9_-]",
    )
}

pub fn app_key(field: &str, v: &str) -> R<()> {
    charset(
        field,
        v,
        4,
        64,
        |b| b.is_ascii_alphanumeric() || b"._-".contains(&b),
        "[A-Za-z0-9._-]",
    )
}

pub fn app_secret(field: &str, v: &str) -> R<()> {
    charset(
        field,
        v,
        16,
        256,
        |b| b.is_ascii_graphic(),
        "printable ASCII without spaces",
    )
}

pub fn app_code(field: &str, v: &str) -> R<()> {
    charset(
        field,
        v,
        16,
        128,
        |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
        "[A-Za-z0-9_-]",
    )
}

fn stage(field: &str, v: &str) -> R<String> {
    charset(
        field,
        v,
        1,
        32,
        |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
        "[A-Za-z0-9_-]",
    )?;
    Ok(v.to_ascii_uppercase())
}

fn header_value(field: &str, v: &str, max: usize) -> R<()> {
    text(field, v, max)?;
    if http::HeaderValue::from_str(v).is_err() {
        return Err(invalid(field, "must be usable as an HTTP header value"));
    }
    Ok(())
}

fn tags(field: &str, t: &std::collections::HashMap<String, String>) -> R<BTreeMap<String, String>> {
    if t.len() > 64 {
        return Err(invalid(field, "at most 64 tags"));
    }
    for (k, v) in t {
        charset(
            &format!("{field}[{k}]"),
            k,
            1,
            64,
            |b| b.is_ascii_graphic() && b != b'=',
            "printable ASCII except '='",
        )?;
        text(&format!("{field}[{k}]"), v, 256)?;
    }
    Ok(t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

fn host(field: &str, v: &str) -> R<Option<String>> {
    if v.is_empty() {
        return Ok(None);
    }
    charset(
        field,
        v,
        1,
        253,
        |b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-',
        "a host name without port ([A-Za-z0-9.-])",
    )?;
    Ok(Some(v.to_ascii_lowercase()))
}

fn scheme_name(field: &str, s: i32) -> R<String> {
    SchemeKind::from_proto(s)
        .map(|k| k.as_str().to_owned())
        .ok_or_else(|| invalid(field, format!("{s} is not an accepted scheme")))
}

fn scheme_enum(name: &str) -> i32 {
    name.parse::<SchemeKind>()
        .map_or(pb::AuthScheme::Unspecified, SchemeKind::proto) as i32
}

// === field masks ===

/// The paths of `mask`, checked against `allowed`. An absent or empty mask means every
/// field the request populated (`populated`), as AIP-134 says.
pub fn mask_paths(
    mask: Option<&FieldMask>,
    allowed: &[&str],
    populated: &[&str],
) -> R<Vec<String>> {
    let paths: Vec<String> = match mask {
        Some(m) if !m.paths.is_empty() => m.paths.clone(),
        _ => populated.iter().map(|p| (*p).to_owned()).collect(),
    };
    if paths.is_empty() {
        return Err(invalid("update_mask", "names no field to update"));
    }
    for p in &paths {
        if !allowed.contains(&p.as_str()) {
            return Err(invalid(
                "update_mask",
                format!("'{p}' cannot be updated (allowed: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(paths)
}

// === apps ===

/// A CreateApp request: the app, and the default key pair's custom AppKey and secret.
pub fn create_app(r: &pb::CreateAppRequest) -> R<crate::store::NewApp> {
    let a = r.app.as_ref().ok_or_else(|| invalid("app", "required"))?;
    if !r.app_key.is_empty() {
        app_key("app_key", &r.app_key)?;
    }
    if !r.app_secret.is_empty() {
        app_secret("app_secret", &r.app_secret)?;
    }
    Ok(crate::store::NewApp {
        app_key: (!r.app_key.is_empty()).then(|| r.app_key.clone()),
        app_secret: (!r.app_secret.is_empty()).then(|| r.app_secret.clone()),
        ..new_app(a)?
    })
}

pub fn new_app(a: &pb::App) -> R<crate::store::NewApp> {
    name("App.name", &a.name)?;
    name("App.owner", &a.owner)?;
    text("App.description", &a.description, 1024)?;
    header_value("App.extend_info", &a.extend_info, 4096)?;
    if !a.id.is_empty() {
        app_id("App.id", &a.id)?;
    }
    if !a.app_code.is_empty() {
        app_code("App.app_code", &a.app_code)?;
    }
    Ok(crate::store::NewApp {
        id: (!a.id.is_empty()).then(|| a.id.clone()),
        name: a.name.clone(),
        owner: a.owner.clone(),
        description: a.description.clone(),
        tags: tags("App.tags", &a.tags)?,
        extend_info: a.extend_info.clone(),
        app_code: (!a.app_code.is_empty()).then(|| a.app_code.clone()),
        app_key: None,
        app_secret: None,
    })
}

pub fn app_patch(a: &pb::App, mask: Option<&FieldMask>) -> R<crate::store::AppPatch> {
    let mut populated = Vec::new();
    for (f, set) in [
        ("name", !a.name.is_empty()),
        ("description", !a.description.is_empty()),
        ("tags", !a.tags.is_empty()),
        ("extend_info", !a.extend_info.is_empty()),
    ] {
        if set {
            populated.push(f);
        }
    }
    let paths = mask_paths(
        mask,
        &["name", "description", "tags", "extend_info", "enabled"],
        &populated,
    )?;
    let mut p = crate::store::AppPatch::default();
    for path in &paths {
        match path.as_str() {
            "name" => {
                name("App.name", &a.name)?;
                p.name = Some(a.name.clone());
            }
            "description" => {
                text("App.description", &a.description, 1024)?;
                p.description = Some(a.description.clone());
            }
            "tags" => p.tags = Some(tags("App.tags", &a.tags)?),
            "extend_info" => {
                header_value("App.extend_info", &a.extend_info, 4096)?;
                p.extend_info = Some(a.extend_info.clone());
            }
            _ => p.enabled = Some(a.enabled),
        }
    }
    Ok(p)
}

/// An app for a response. `with_code` only for the calls that create or reset it.
pub fn app_out(a: &model::App, with_code: bool) -> pb::App {
    pb::App {
        id: a.id.clone(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        description: a.description.clone(),
        tags: a.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        extend_info: a.extend_info.clone(),
        app_code: match (&a.app_code, with_code) {
            (Some(c), true) => c.expose().to_owned(),
            _ => String::new(),
        },
        app_code_set: a.app_code.is_some(),
        enabled: a.enabled,
        create_time: ts(a.create_ms),
        update_time: ts(a.update_ms),
    }
}

// === key pairs ===

pub fn new_key(r: &pb::CreateKeyPairRequest) -> R<crate::store::NewKey> {
    required("app_id", &r.app_id)?;
    if !r.app_key.is_empty() {
        app_key("KeyPair.app_key", &r.app_key)?;
    }
    if !r.app_secret.is_empty() {
        app_secret("KeyPair.app_secret", &r.app_secret)?;
    }
    text("KeyPair.name", &r.name, 128)?;
    text("KeyPair.description", &r.description, 1024)?;
    Ok(crate::store::NewKey {
        app_id: r.app_id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        app_key: (!r.app_key.is_empty()).then(|| r.app_key.clone()),
        app_secret: (!r.app_secret.is_empty()).then(|| r.app_secret.clone()),
        expires_ms: opt_ms_of("expires_at", r.expires_at.as_ref())?,
    })
}

pub fn key_patch(k: &pb::KeyPair, mask: Option<&FieldMask>) -> R<crate::store::KeyPatch> {
    let mut populated = Vec::new();
    for (f, set) in [
        ("expires_at", k.expires_at.is_some()),
        ("name", !k.name.is_empty()),
        ("description", !k.description.is_empty()),
    ] {
        if set {
            populated.push(f);
        }
    }
    let paths = mask_paths(
        mask,
        &["expires_at", "enabled", "name", "description"],
        &populated,
    )?;
    let mut p = crate::store::KeyPatch::default();
    for path in &paths {
        match path.as_str() {
            "expires_at" => {
                p.expires_ms = Some(opt_ms_of("KeyPair.expires_at", k.expires_at.as_ref())?)
            }
            "name" => {
                text("KeyPair.name", &k.name, 128)?;
                p.name = Some(k.name.clone());
            }
            "description" => {
                text("KeyPair.description", &k.description, 1024)?;
                p.description = Some(k.description.clone());
            }
            _ => p.enabled = Some(k.enabled),
        }
    }
    Ok(p)
}

/// A key pair for a response. `with_secret` only for create and reset.
pub fn key_out(k: &model::KeyPair, with_secret: bool) -> pb::KeyPair {
    pb::KeyPair {
        app_key: k.app_key.clone(),
        app_id: k.app_id.clone(),
        app_secret: if with_secret {
            k.secret.expose().to_owned()
        } else {
            String::new()
        },
        is_default: k.is_default,
        enabled: k.enabled,
        expires_at: opt_ts(k.expires_ms),
        previous_secret_expires_at: k.previous.as_ref().and_then(|p| ts(p.until_ms)),
        create_time: ts(k.create_ms),
        update_time: ts(k.update_ms),
        // Not the key's record: the admin service adds it (`with_last_use`).
        last_used_at: None,
        name: k.name.clone(),
        description: k.description.clone(),
    }
}

// === groups ===

pub fn group_out(g: &model::Group) -> pb::Group {
    pb::Group {
        id: g.id.clone(),
        name: g.name.clone(),
        owner: g.owner.clone(),
        description: g.description.clone(),
        create_time: ts(g.create_ms),
        update_time: ts(g.update_ms),
    }
}

// === APIs ===

/// The API fields an update mask may name (owner excluded: an API does not change
/// hands). They have the same names in the admin message and the model, so one list
/// makes the mask's allowed paths and both copies: the admin message (merging a masked
/// update onto the current API before it is validated as a whole) and the model (the
/// store applying the validated fields inside its transaction).
macro_rules! api_mask_fields {
    ($($field:ident),* $(,)?) => {
        const API_MASKABLE: &[&str] = &[$(stringify!($field)),*];

        /// Copies the masked field `path` from `src` to `dst` (admin messages).
        #[allow(clippy::clone_on_copy)]
        pub fn api_copy_masked(dst: &mut pb::Api, src: &pb::Api, path: &str) {
            match path {
                $(stringify!($field) => dst.$field = src.$field.clone(),)*
                _ => {}
            }
        }

        /// Copies the masked fields of a validated `src` onto `dst` (the model).
        #[allow(clippy::clone_on_copy)]
        pub fn api_apply(dst: &mut model::Api, src: &model::Api, paths: &[String]) {
            for p in paths {
                match p.as_str() {
                    $(stringify!($field) => dst.$field = src.$field.clone(),)*
                    _ => {}
                }
            }
        }
    };
}

api_mask_fields!(
    name,
    group_id,
    description,
    host,
    methods,
    path,
    auth_schemes,
    anonymous_allowed,
    body_digest_required,
    tencent_strip_env_prefix,
    sigv4_region,
    sigv4_service,
    replay_protection,
    user_auth_required,
    user_auth_exempt_apps,
);

/// Validates an API message into the model (id and times are the store's to set).
pub fn api_in(a: &pb::Api) -> R<model::Api> {
    name("Api.name", &a.name)?;
    name("Api.owner", &a.owner)?;
    text("Api.description", &a.description, 1024)?;
    required("Api.path", &a.path)?;
    Template::parse(&a.path).map_err(|e| invalid("Api.path", e.to_string()))?;
    let mut methods = Vec::new();
    for (i, m) in a.methods.iter().enumerate() {
        let up = m.to_ascii_uppercase();
        if !METHODS.contains(&up.as_str()) {
            return Err(invalid(
                format!("Api.methods[{i}]"),
                format!("'{m}' is not an HTTP method"),
            ));
        }
        if !methods.contains(&up) {
            methods.push(up);
        }
    }
    let mut schemes = Vec::new();
    for (i, s) in a.auth_schemes.iter().enumerate() {
        let n = scheme_name(&format!("Api.auth_schemes[{i}]"), *s)?;
        if !schemes.contains(&n) {
            schemes.push(n);
        }
    }
    let short = |field: &str, v: &str| -> R<Option<String>> {
        if v.is_empty() {
            return Ok(None);
        }
        charset(
            field,
            v,
            1,
            64,
            |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
            "[A-Za-z0-9_-]",
        )?;
        Ok(Some(v.to_owned()))
    };
    Ok(model::Api {
        id: String::new(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        group_id: (!a.group_id.is_empty()).then(|| a.group_id.clone()),
        description: a.description.clone(),
        host: host("Api.host", &a.host)?,
        methods,
        path: a.path.clone(),
        auth_schemes: schemes,
        anonymous_allowed: a.anonymous_allowed,
        body_digest_required: a.body_digest_required,
        tencent_strip_env_prefix: a.tencent_strip_env_prefix,
        sigv4_region: short("Api.sigv4_region", &a.sigv4_region)?,
        sigv4_service: short("Api.sigv4_service", &a.sigv4_service)?,
        replay_protection: a.replay_protection,
        user_auth_required: a.user_auth_required,
        user_auth_exempt_apps: {
            let mut apps: Vec<String> = Vec::new();
            for (i, id) in a.user_auth_exempt_apps.iter().enumerate() {
                app_id(&format!("Api.user_auth_exempt_apps[{i}]"), id)?;
                if !apps.contains(id) {
                    apps.push(id.clone());
                }
            }
            apps
        },
        create_ms: 0,
        update_ms: 0,
    })
}

/// The mask paths of an UpdateApi request (owner excluded: an API does not change hands).
pub fn api_mask(a: &pb::Api, mask: Option<&FieldMask>) -> R<Vec<String>> {
    let populated: Vec<&str> = [
        ("name", !a.name.is_empty()),
        ("group_id", !a.group_id.is_empty()),
        ("description", !a.description.is_empty()),
        ("host", !a.host.is_empty()),
        ("methods", !a.methods.is_empty()),
        ("path", !a.path.is_empty()),
        ("auth_schemes", !a.auth_schemes.is_empty()),
        ("sigv4_region", !a.sigv4_region.is_empty()),
        ("sigv4_service", !a.sigv4_service.is_empty()),
        ("user_auth_exempt_apps", !a.user_auth_exempt_apps.is_empty()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    mask_paths(mask, API_MASKABLE, &populated)
}

pub fn api_out(a: &model::Api) -> pb::Api {
    pb::Api {
        id: a.id.clone(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        group_id: a.group_id.clone().unwrap_or_default(),
        description: a.description.clone(),
        host: a.host.clone().unwrap_or_default(),
        methods: a.methods.clone(),
        path: a.path.clone(),
        auth_schemes: a.auth_schemes.iter().map(|s| scheme_enum(s)).collect(),
        anonymous_allowed: a.anonymous_allowed,
        body_digest_required: a.body_digest_required,
        tencent_strip_env_prefix: a.tencent_strip_env_prefix,
        sigv4_region: a.sigv4_region.clone().unwrap_or_default(),
        sigv4_service: a.sigv4_service.clone().unwrap_or_default(),
        replay_protection: a.replay_protection,
        user_auth_required: a.user_auth_required,
        user_auth_exempt_apps: a.user_auth_exempt_apps.clone(),
        create_time: ts(a.create_ms),
        update_time: ts(a.update_ms),
    }
}

// === grants ===

pub fn grant_in(g: &pb::Grant) -> R<model::Grant> {
    required("Grant.app_id", &g.app_id)?;
    let target = match &g.target {
        Some(pb::grant::Target::ApiId(id)) if !id.is_empty() => model::GrantTarget::Api(id.clone()),
        Some(pb::grant::Target::GroupId(id)) if !id.is_empty() => {
            model::GrantTarget::Group(id.clone())
        }
        _ => return Err(invalid("Grant.target", "set api_id or group_id")),
    };
    Ok(model::Grant {
        id: String::new(),
        app_id: g.app_id.clone(),
        target,
        stages: stages("Grant.stages", &g.stages)?,
        expires_ms: opt_ms_of("Grant.expires_at", g.expires_at.as_ref())?,
        created_by: String::new(),
        create_ms: 0,
    })
}

/// Stage names, upper-cased and de-duplicated.
pub fn stage_list(field: &str, v: &[String]) -> R<Vec<String>> {
    stages(field, v)
}

fn stages(field: &str, v: &[String]) -> R<Vec<String>> {
    let mut out = Vec::new();
    for (i, s) in v.iter().enumerate() {
        let s = stage(&format!("{field}[{i}]"), s)?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// `UpdateGrant`: stages and expiry, as the mask (or the fields set) says.
pub fn grant_patch(g: &pb::Grant, mask: Option<&FieldMask>) -> R<crate::store::GrantPatch> {
    let mut populated = Vec::new();
    if !g.stages.is_empty() {
        populated.push("stages");
    }
    if g.expires_at.is_some() {
        populated.push("expires_at");
    }
    let paths = mask_paths(mask, &["stages", "expires_at"], &populated)?;
    let mut p = crate::store::GrantPatch::default();
    for path in &paths {
        if path == "stages" {
            p.stages = Some(stages("Grant.stages", &g.stages)?);
        } else {
            p.expires_ms = Some(opt_ms_of("Grant.expires_at", g.expires_at.as_ref())?);
        }
    }
    Ok(p)
}

/// A batch of apps × APIs and groups.
pub fn batch_in(
    app_ids: &[String],
    api_ids: &[String],
    group_ids: &[String],
    stage_list: &[String],
    expires_at: Option<&Timestamp>,
) -> R<crate::store::BatchGrants> {
    let ids = |field: &str, v: &[String]| -> R<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for (i, id) in v.iter().enumerate() {
            required(&format!("{field}[{i}]"), id)?;
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        Ok(out)
    };
    let mut targets: Vec<model::GrantTarget> = ids("api_ids", api_ids)?
        .into_iter()
        .map(model::GrantTarget::Api)
        .collect();
    targets.extend(
        ids("group_ids", group_ids)?
            .into_iter()
            .map(model::GrantTarget::Group),
    );
    Ok(crate::store::BatchGrants {
        app_ids: ids("app_ids", app_ids)?,
        targets,
        stages: stages("stages", stage_list)?,
        expires_ms: opt_ms_of("expires_at", expires_at)?,
    })
}

pub fn permission_out(r: &crate::store::Reach) -> pb::Permission {
    pb::Permission {
        app_id: r.app_id.clone(),
        api_id: r.api.id.clone(),
        api_name: r.api.name.clone(),
        grant: Some(grant_out(&r.grant)),
        expired: r.expired,
    }
}

// === permission requests ===

pub fn request_in(r: &pb::CreatePermissionRequestRequest) -> R<crate::store::requests::NewRequest> {
    required("app_id", &r.app_id)?;
    text("reason", &r.reason, 1024)?;
    let b = batch_in(
        std::slice::from_ref(&r.app_id),
        &r.api_ids,
        &r.group_ids,
        &r.stages,
        None,
    )?;
    if b.targets.is_empty() {
        return Err(invalid("api_ids", "name at least one API or group"));
    }
    let valid_days = match u32::try_from(r.valid_days) {
        Ok(0) => None,
        Ok(d) if d <= crate::store::requests::MAX_VALID_DAYS => Some(d),
        _ => {
            return Err(invalid(
                "valid_days",
                format!(
                    "between 1 and {} (0: see valid_until, or permanent)",
                    crate::store::requests::MAX_VALID_DAYS
                ),
            ));
        }
    };
    let valid_until_ms = opt_ms_of("valid_until", r.valid_until.as_ref())?;
    if valid_days.is_some() && valid_until_ms.is_some() {
        return Err(invalid(
            "valid_until",
            "set valid_days or valid_until, not both",
        ));
    }
    Ok(crate::store::requests::NewRequest {
        app_id: r.app_id.clone(),
        targets: b.targets,
        stages: b.stages,
        reason: r.reason.clone(),
        valid_days,
        valid_until_ms,
    })
}

pub fn decision_in(
    r: &pb::DecidePermissionRequestRequest,
    approve: bool,
) -> R<crate::store::requests::Decision> {
    required("id", &r.id)?;
    text("comment", &r.comment, 1024)?;
    if !approve && (!r.stages.is_empty() || r.expires_at.is_some()) {
        return Err(invalid(
            "stages",
            "a rejection grants nothing: set only a comment",
        ));
    }
    Ok(crate::store::requests::Decision {
        approve,
        target_ids: r.target_ids.clone(),
        comment: r.comment.clone(),
        stages: stages("stages", &r.stages)?,
        expires_ms: opt_ms_of("expires_at", r.expires_at.as_ref())?,
    })
}

pub fn request_out(r: &crate::store::codec::PermissionRequestRecord) -> pb::PermissionRequest {
    let nonzero = |ms: i64| (ms > 0).then(|| ts(ms)).flatten();
    pb::PermissionRequest {
        id: r.id.clone(),
        app_id: r.app_id.clone(),
        items: r
            .items
            .iter()
            .map(|i| pb::PermissionItem {
                target: Some(if i.api_id.is_empty() {
                    pb::permission_item::Target::GroupId(i.group_id.clone())
                } else {
                    pb::permission_item::Target::ApiId(i.api_id.clone())
                }),
                status: i.status.clone(),
                decided_by: i.decided_by.clone(),
                decide_time: nonzero(i.decide_ms),
                comment: i.comment.clone(),
                grant_id: i.grant_id.clone(),
                granted_stages: i.granted_stages.clone(),
                granted_expires_at: nonzero(i.granted_expires_ms),
            })
            .collect(),
        stages: r.stages.clone(),
        reason: r.reason.clone(),
        valid_days: i32::try_from(r.valid_days).unwrap_or(i32::MAX),
        valid_until: nonzero(r.valid_until_ms),
        status: crate::store::requests::overall(r).to_owned(),
        requested_by: r.requested_by.clone(),
        create_time: ts(r.create_ms),
        update_time: ts(r.update_ms),
    }
}

// === principals ===

pub fn principal_in(p: &pb::Principal) -> R<model::Principal> {
    app_id("Principal.name", &p.name)?;
    if p.name == "admin" {
        return Err(invalid(
            "Principal.name",
            "'admin' is the bootstrap token's principal",
        ));
    }
    let role = model::Role::parse(&p.role).ok_or_else(|| {
        invalid(
            "Principal.role",
            "one of admin, viewer, provider, developer",
        )
    })?;
    if role.scoped() {
        name("Principal.owner", &p.owner)?;
    } else if !p.owner.is_empty() {
        return Err(invalid(
            "Principal.owner",
            format!("a {} acts for every owner: leave it empty", role.as_str()),
        ));
    }
    text("Principal.description", &p.description, 1024)?;
    let cert_subject = if p.cert_subject.is_empty() {
        String::new()
    } else {
        crate::subject::parse(&p.cert_subject).map_err(|e| invalid("Principal.cert_subject", e))?
    };
    Ok(model::Principal {
        name: p.name.clone(),
        role,
        owner: p.owner.clone(),
        description: p.description.clone(),
        cert_subject,
        create_ms: 0,
        update_ms: 0,
    })
}

pub fn principal_out(p: &model::Principal) -> pb::Principal {
    pb::Principal {
        name: p.name.clone(),
        role: p.role.as_str().to_owned(),
        owner: p.owner.clone(),
        description: p.description.clone(),
        cert_subject: p.cert_subject.clone(),
        create_time: (p.create_ms > 0).then(|| ts(p.create_ms)).flatten(),
        update_time: (p.update_ms > 0).then(|| ts(p.update_ms)).flatten(),
    }
}

pub fn grant_out(g: &model::Grant) -> pb::Grant {
    pb::Grant {
        id: g.id.clone(),
        app_id: g.app_id.clone(),
        target: Some(match &g.target {
            model::GrantTarget::Api(id) => pb::grant::Target::ApiId(id.clone()),
            model::GrantTarget::Group(id) => pb::grant::Target::GroupId(id.clone()),
        }),
        stages: g.stages.clone(),
        expires_at: opt_ts(g.expires_ms),
        created_by: g.created_by.clone(),
        create_time: ts(g.create_ms),
    }
}

pub fn audit_out(e: &model::AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id,
        time: ts(e.time_ms),
        actor: e.actor.clone(),
        action: e.action.clone(),
        resource_type: e.resource_type.clone(),
        resource_id: e.resource_id.clone(),
        summary: e.summary.clone(),
    }
}

pub fn page(size: i32, token: &str) -> R<crate::store::Page> {
    if size < 0 {
        return Err(invalid("page_size", "must not be negative"));
    }
    let size = if size == 0 {
        100
    } else {
        (size as usize).min(1000)
    };
    Ok(crate::store::Page {
        size,
        token: token.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let err = new_app(&pb::App {
            owner: "o".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "App.name: required");
        let err = new_app(&pb::App {
            name: "n".into(),
            owner: "o".into(),
            id: "Bad Id".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("App.id:"));
        let err = api_in(&pb::Api {
            name: "n".into(),
            owner: "o".into(),
            path: "/a/{*r}/b".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("Api.path:"));
        let err = api_in(&pb::Api {
            name: "n".into(),
            owner: "o".into(),
            path: "/a".into(),
            methods: vec!["FETCH".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("Api.methods[0]:"));
        let err = grant_in(&pb::Grant {
            app_id: "a".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("Grant.target:"));
        let err = mask_paths(
            Some(&FieldMask {
                paths: vec!["owner".into()],
            }),
            &["name"],
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("update_mask:"));
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 999, 1_700_000_000_123] {
            assert_eq!(ms_of("t", &ts(ms).unwrap()).unwrap(), ms);
        }
        assert!(
            ms_of(
                "t",
                &Timestamp {
                    seconds: 1,
                    nanos: -1
                }
            )
            .is_err()
        );
    }

    /// Every maskable field is copied by both copies, and only that field.
    #[test]
    fn each_mask_path_copies_exactly_its_field() {
        let full = pb::Api {
            id: "api1".into(),
            name: "n2".into(),
            owner: "o".into(),
            group_id: "g2".into(),
            description: "d2".into(),
            host: "h2.example.com".into(),
            methods: vec!["POST".into()],
            path: "/v2/{*rest}".into(),
            auth_schemes: vec![pb::AuthScheme::Sigv4 as i32],
            anonymous_allowed: true,
            body_digest_required: true,
            tencent_strip_env_prefix: true,
            sigv4_region: "eu-west-1".into(),
            sigv4_service: "s3".into(),
            replay_protection: true,
            user_auth_required: true,
            user_auth_exempt_apps: vec!["trusted-app".into()],
            ..Default::default()
        };
        let base = pb::Api {
            id: "api1".into(),
            name: "n1".into(),
            owner: "o".into(),
            path: "/v1/{*rest}".into(),
            ..Default::default()
        };
        let src = api_in(&full).unwrap();
        for path in API_MASKABLE {
            let mut msg = base.clone();
            api_copy_masked(&mut msg, &full, path);
            assert_ne!(msg, base, "{path}: not copied in the admin message");
            let before = api_in(&base).unwrap();
            let mut model = before.clone();
            api_apply(&mut model, &src, &[(*path).to_owned()]);
            assert_ne!(model, before, "{path}: not copied in the model");
            // Nothing else moved: copying the field back restores the original.
            api_apply(&mut model, &before, &[(*path).to_owned()]);
            assert_eq!(model, before, "{path}: copied more than its field");
        }
    }
}
