//! Records <-> model types. Sealing and unsealing of secrets happens here and only here.

use super::StoreError;
use super::codec::{ApiRecord, AppRecord, AuditRecord, GrantRecord, GroupRecord, KeyRecord};
use super::seal::{Sealer, app_code_aad, key_aad};
use crate::model::{Api, App, AuditEvent, Grant, GrantTarget, Group, KeyPair, PreviousSecret};

fn opt_ms(ms: i64) -> Option<i64> {
    (ms != 0).then_some(ms)
}

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub(super) fn app_to_record(sealer: &Sealer, a: &App) -> Result<AppRecord, StoreError> {
    let sealed_app_code = match &a.app_code {
        Some(code) => sealer.seal_secret(code, &app_code_aad(&a.id))?,
        None => Vec::new(),
    };
    Ok(AppRecord {
        id: a.id.clone(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        description: a.description.clone(),
        tags: a.tags.clone(),
        extend_info: a.extend_info.clone(),
        sealed_app_code,
        enabled: a.enabled,
        create_ms: a.create_ms,
        update_ms: a.update_ms,
    })
}

pub(super) fn app_from_record(sealer: &Sealer, r: AppRecord) -> Result<App, StoreError> {
    let app_code = if r.sealed_app_code.is_empty() {
        None
    } else {
        Some(sealer.open_secret(&r.sealed_app_code, &app_code_aad(&r.id))?)
    };
    Ok(App {
        id: r.id,
        name: r.name,
        owner: r.owner,
        description: r.description,
        tags: r.tags,
        extend_info: r.extend_info,
        app_code,
        enabled: r.enabled,
        create_ms: r.create_ms,
        update_ms: r.update_ms,
    })
}

pub(super) fn key_to_record(sealer: &Sealer, k: &KeyPair) -> Result<KeyRecord, StoreError> {
    let aad = key_aad(&k.app_key);
    let (sealed_previous_secret, previous_until_ms) = match &k.previous {
        Some(p) => (sealer.seal_secret(&p.secret, &aad)?, p.until_ms),
        None => (Vec::new(), 0),
    };
    Ok(KeyRecord {
        app_key: k.app_key.clone(),
        app_id: k.app_id.clone(),
        sealed_secret: sealer.seal_secret(&k.secret, &aad)?,
        is_default: k.is_default,
        enabled: k.enabled,
        expires_ms: k.expires_ms.unwrap_or(0),
        sealed_previous_secret,
        previous_until_ms,
        create_ms: k.create_ms,
        update_ms: k.update_ms,
        name: k.name.clone(),
        description: k.description.clone(),
    })
}

pub(super) fn key_from_record(sealer: &Sealer, r: KeyRecord) -> Result<KeyPair, StoreError> {
    let aad = key_aad(&r.app_key);
    let previous = if r.sealed_previous_secret.is_empty() {
        None
    } else {
        Some(PreviousSecret {
            secret: sealer.open_secret(&r.sealed_previous_secret, &aad)?,
            until_ms: r.previous_until_ms,
        })
    };
    Ok(KeyPair {
        secret: sealer.open_secret(&r.sealed_secret, &aad)?,
        app_key: r.app_key,
        app_id: r.app_id,
        name: r.name,
        description: r.description,
        is_default: r.is_default,
        enabled: r.enabled,
        expires_ms: opt_ms(r.expires_ms),
        previous,
        create_ms: r.create_ms,
        update_ms: r.update_ms,
    })
}

pub(super) fn group_to_record(g: &Group) -> GroupRecord {
    GroupRecord {
        id: g.id.clone(),
        name: g.name.clone(),
        owner: g.owner.clone(),
        description: g.description.clone(),
        create_ms: g.create_ms,
        update_ms: g.update_ms,
    }
}

pub(super) fn group_from_record(r: GroupRecord) -> Group {
    Group {
        id: r.id,
        name: r.name,
        owner: r.owner,
        description: r.description,
        create_ms: r.create_ms,
        update_ms: r.update_ms,
    }
}

pub(super) fn api_to_record(a: &Api) -> ApiRecord {
    ApiRecord {
        id: a.id.clone(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        group_id: a.group_id.clone().unwrap_or_default(),
        description: a.description.clone(),
        host: a.host.clone().unwrap_or_default(),
        methods: a.methods.clone(),
        path: a.path.clone(),
        auth_schemes: a.auth_schemes.clone(),
        anonymous_allowed: a.anonymous_allowed,
        body_digest_required: a.body_digest_required,
        tencent_strip_env_prefix: a.tencent_strip_env_prefix,
        sigv4_region: a.sigv4_region.clone().unwrap_or_default(),
        sigv4_service: a.sigv4_service.clone().unwrap_or_default(),
        replay_protection: a.replay_protection,
        user_auth_required: a.user_auth_required,
        user_auth_exempt_apps: a.user_auth_exempt_apps.clone(),
        create_ms: a.create_ms,
        update_ms: a.update_ms,
    }
}

pub(super) fn api_from_record(r: ApiRecord) -> Api {
    Api {
        group_id: opt_str(&r.group_id),
        host: opt_str(&r.host),
        sigv4_region: opt_str(&r.sigv4_region),
        sigv4_service: opt_str(&r.sigv4_service),
        id: r.id,
        name: r.name,
        owner: r.owner,
        description: r.description,
        methods: r.methods,
        path: r.path,
        auth_schemes: r.auth_schemes,
        anonymous_allowed: r.anonymous_allowed,
        body_digest_required: r.body_digest_required,
        tencent_strip_env_prefix: r.tencent_strip_env_prefix,
        replay_protection: r.replay_protection,
        user_auth_required: r.user_auth_required,
        user_auth_exempt_apps: r.user_auth_exempt_apps,
        create_ms: r.create_ms,
        update_ms: r.update_ms,
    }
}

pub(super) fn grant_to_record(g: &Grant) -> GrantRecord {
    let (api_id, group_id) = match &g.target {
        GrantTarget::Api(id) => (id.clone(), String::new()),
        GrantTarget::Group(id) => (String::new(), id.clone()),
    };
    GrantRecord {
        id: g.id.clone(),
        app_id: g.app_id.clone(),
        api_id,
        group_id,
        stages: g.stages.clone(),
        expires_ms: g.expires_ms.unwrap_or(0),
        created_by: g.created_by.clone(),
        create_ms: g.create_ms,
    }
}

pub(super) fn grant_from_record(r: GrantRecord) -> Result<Grant, StoreError> {
    let target = match (r.api_id.is_empty(), r.group_id.is_empty()) {
        (false, true) => GrantTarget::Api(r.api_id),
        (true, false) => GrantTarget::Group(r.group_id),
        _ => {
            return Err(StoreError::corrupt(
                "grants",
                format!("grant {} has no single target", r.id),
            ));
        }
    };
    Ok(Grant {
        id: r.id,
        app_id: r.app_id,
        target,
        stages: r.stages,
        expires_ms: opt_ms(r.expires_ms),
        created_by: r.created_by,
        create_ms: r.create_ms,
    })
}

pub(super) fn audit_from_record(r: AuditRecord) -> AuditEvent {
    AuditEvent {
        id: r.id,
        time_ms: r.time_ms,
        actor: r.actor,
        action: r.action,
        resource_type: r.resource_type,
        resource_id: r.resource_id,
        summary: r.summary,
    }
}
