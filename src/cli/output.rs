//! What the admin verbs print: `--output table` (aligned columns for lists, one
//! `field  value` line per field for a single resource) or `--output json` (the proto
//! messages with their proto field names, timestamps as RFC 3339 strings).
//!
//! JSON keeps every field, defaults included, so a script sees the same keys on every
//! object; an unset timestamp (or grant target) is `null`. Keys come in alphabetical
//! order: serde_json's `preserve_order` feature would also reorder the service's JSON
//! logs, which share the crate.

use std::io::Write;

use serde_json::{Value, json};

use super::time::format_ts;
use crate::pb::admin as pb;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// A proto message the CLI prints.
pub trait Printable {
    /// The message as proto JSON (snake_case names).
    fn json(&self) -> Value;
    /// `field  value` lines for a single resource.
    fn fields(&self) -> Vec<(&'static str, String)>;
    /// Column titles of a list.
    fn columns() -> &'static [&'static str];
    /// One row of a list, in `columns()` order.
    fn row(&self) -> Vec<String>;
}

fn ts(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_ts(t)))
}

fn ts_text(t: Option<&prost_types::Timestamp>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), format_ts)
}

fn sorted_tags(tags: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = tags.iter().collect();
    v.sort();
    v
}

fn tags_text(tags: &std::collections::HashMap<String, String>) -> String {
    sorted_tags(tags)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn scheme_names(schemes: &[i32]) -> Vec<&'static str> {
    schemes
        .iter()
        .map(|s| pb::AuthScheme::try_from(*s).map_or("UNKNOWN", |s| s.as_str_name()))
        .collect()
}

fn list_text<S: AsRef<str>>(items: &[S], empty: &str) -> String {
    if items.is_empty() {
        empty.to_owned()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Printable for pb::App {
    fn json(&self) -> Value {
        let tags: serde_json::Map<String, Value> = sorted_tags(&self.tags)
            .into_iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "description": self.description,
            "tags": tags,
            "extend_info": self.extend_info,
            "app_code": self.app_code,
            "app_code_set": self.app_code_set,
            "enabled": self.enabled,
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("owner", self.owner.clone()),
            ("description", self.description.clone()),
            ("tags", tags_text(&self.tags)),
            ("extend_info", self.extend_info.clone()),
        ];
        if self.app_code.is_empty() {
            f.push(("app_code_set", self.app_code_set.to_string()));
        } else {
            f.push(("app_code", self.app_code.clone()));
        }
        f.extend([
            ("enabled", self.enabled.to_string()),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
            ("update_time", ts_text(self.update_time.as_ref(), "")),
        ]);
        f
    }
    fn columns() -> &'static [&'static str] {
        &["ID", "NAME", "OWNER", "ENABLED", "TAGS", "CREATED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.owner.clone(),
            self.enabled.to_string(),
            tags_text(&self.tags),
            ts_text(self.create_time.as_ref(), ""),
        ]
    }
}

impl Printable for pb::KeyPair {
    fn json(&self) -> Value {
        json!({
            "app_key": self.app_key,
            "app_id": self.app_id,
            "app_secret": self.app_secret,
            "is_default": self.is_default,
            "enabled": self.enabled,
            "expires_at": ts(self.expires_at.as_ref()),
            "previous_secret_expires_at": ts(self.previous_secret_expires_at.as_ref()),
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
            "last_used_at": ts(self.last_used_at.as_ref()),
            "name": self.name,
            "description": self.description,
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("app_key", self.app_key.clone()),
            ("app_id", self.app_id.clone()),
            ("name", self.name.clone()),
            ("description", self.description.clone()),
        ];
        if !self.app_secret.is_empty() {
            f.push(("app_secret", self.app_secret.clone()));
        }
        f.extend([
            ("is_default", self.is_default.to_string()),
            ("enabled", self.enabled.to_string()),
            ("expires_at", ts_text(self.expires_at.as_ref(), "never")),
        ]);
        if let Some(t) = &self.previous_secret_expires_at {
            f.push(("previous_secret_expires_at", format_ts(t)));
        }
        f.extend([
            ("create_time", ts_text(self.create_time.as_ref(), "")),
            ("update_time", ts_text(self.update_time.as_ref(), "")),
            (
                "last_used_at",
                ts_text(self.last_used_at.as_ref(), "never seen"),
            ),
        ]);
        f
    }
    fn columns() -> &'static [&'static str] {
        &[
            "APP_KEY",
            "APP_ID",
            "DEFAULT",
            "ENABLED",
            "EXPIRES",
            "CREATED",
            "LAST_USED",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.app_key.clone(),
            self.app_id.clone(),
            self.is_default.to_string(),
            self.enabled.to_string(),
            ts_text(self.expires_at.as_ref(), "never"),
            ts_text(self.create_time.as_ref(), ""),
            ts_text(self.last_used_at.as_ref(), "never seen"),
        ]
    }
}

fn item_text(i: &pb::PermissionItem) -> String {
    use pb::permission_item::Target;
    let t = match &i.target {
        Some(Target::ApiId(id)) => format!("api {id}"),
        Some(Target::GroupId(id)) => format!("group {id}"),
        None => String::new(),
    };
    let mut s = format!("{t}: {}", i.status);
    if !i.decided_by.is_empty() {
        s.push_str(&format!(" by {}", i.decided_by));
    }
    if !i.grant_id.is_empty() {
        s.push_str(&format!(" (grant {})", i.grant_id));
    }
    if !i.comment.is_empty() {
        s.push_str(&format!(": {}", i.comment));
    }
    s
}

impl Printable for pb::PermissionRequest {
    fn json(&self) -> Value {
        use pb::permission_item::Target;
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|i| {
                let (api, group) = match &i.target {
                    Some(Target::ApiId(id)) => (json!(id), Value::Null),
                    Some(Target::GroupId(id)) => (Value::Null, json!(id)),
                    None => (Value::Null, Value::Null),
                };
                json!({
                    "api_id": api,
                    "group_id": group,
                    "status": i.status,
                    "decided_by": i.decided_by,
                    "decide_time": ts(i.decide_time.as_ref()),
                    "comment": i.comment,
                    "grant_id": i.grant_id,
                    "granted_stages": i.granted_stages,
                    "granted_expires_at": ts(i.granted_expires_at.as_ref()),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "app_id": self.app_id,
            "status": self.status,
            "items": items,
            "stages": self.stages,
            "reason": self.reason,
            "valid_days": self.valid_days,
            "valid_until": ts(self.valid_until.as_ref()),
            "requested_by": self.requested_by,
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let validity = match (&self.valid_until, self.valid_days) {
            (Some(t), _) => format!("until {}", format_ts(t)),
            (None, d) if d > 0 => format!("{d} days"),
            _ => "permanent".to_owned(),
        };
        let mut f = vec![
            ("id", self.id.clone()),
            ("app_id", self.app_id.clone()),
            ("status", self.status.clone()),
            ("stages", list_text(&self.stages, "any")),
            ("validity", validity),
            ("reason", self.reason.clone()),
            ("requested_by", self.requested_by.clone()),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
        ];
        for i in &self.items {
            f.push(("item", item_text(i)));
        }
        f
    }
    fn columns() -> &'static [&'static str] {
        &["ID", "APP", "STATUS", "ITEMS", "REQUESTED_BY", "CREATED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.app_id.clone(),
            self.status.clone(),
            self.items
                .iter()
                .map(item_text)
                .collect::<Vec<_>>()
                .join("; "),
            self.requested_by.clone(),
            ts_text(self.create_time.as_ref(), ""),
        ]
    }
}

impl Printable for pb::OwnerStages {
    fn json(&self) -> Value {
        json!({"owner": self.owner, "stages": self.stages, "declared": self.declared})
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("owner", self.owner.clone()),
            ("stages", self.stages.join(",")),
            (
                "declared",
                if self.declared {
                    "yes".to_owned()
                } else {
                    "no (the default set)".to_owned()
                },
            ),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["OWNER", "STAGES", "DECLARED"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.owner.clone(),
            self.stages.join(","),
            self.declared.to_string(),
        ]
    }
}

impl Printable for pb::Principal {
    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "role": self.role,
            "owner": self.owner,
            "description": self.description,
            "cert_subject": self.cert_subject,
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("name", self.name.clone()),
            ("role", self.role.clone()),
            ("owner", self.owner.clone()),
            ("description", self.description.clone()),
            ("cert_subject", self.cert_subject.clone()),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
            ("update_time", ts_text(self.update_time.as_ref(), "")),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["NAME", "ROLE", "OWNER", "DESCRIPTION"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.role.clone(),
            self.owner.clone(),
            self.description.clone(),
        ]
    }
}

impl Printable for pb::Group {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "description": self.description,
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("owner", self.owner.clone()),
            ("description", self.description.clone()),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
            ("update_time", ts_text(self.update_time.as_ref(), "")),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["ID", "NAME", "OWNER", "DESCRIPTION"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.owner.clone(),
            self.description.clone(),
        ]
    }
}

impl Printable for pb::Api {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "group_id": self.group_id,
            "description": self.description,
            "host": self.host,
            "methods": self.methods,
            "path": self.path,
            "auth_schemes": scheme_names(&self.auth_schemes),
            "anonymous_allowed": self.anonymous_allowed,
            "body_digest_required": self.body_digest_required,
            "tencent_strip_env_prefix": self.tencent_strip_env_prefix,
            "sigv4_region": self.sigv4_region,
            "sigv4_service": self.sigv4_service,
            "replay_protection": self.replay_protection,
            "user_auth_required": self.user_auth_required,
            "user_auth_exempt_apps": self.user_auth_exempt_apps,
            "create_time": ts(self.create_time.as_ref()),
            "update_time": ts(self.update_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("owner", self.owner.clone()),
            ("group_id", self.group_id.clone()),
            ("description", self.description.clone()),
            ("host", self.host.clone()),
            ("methods", list_text(&self.methods, "any")),
            ("path", self.path.clone()),
            (
                "auth_schemes",
                list_text(&scheme_names(&self.auth_schemes), "default"),
            ),
            ("anonymous_allowed", self.anonymous_allowed.to_string()),
            (
                "body_digest_required",
                self.body_digest_required.to_string(),
            ),
            (
                "tencent_strip_env_prefix",
                self.tencent_strip_env_prefix.to_string(),
            ),
            ("sigv4_region", self.sigv4_region.clone()),
            ("sigv4_service", self.sigv4_service.clone()),
            ("replay_protection", self.replay_protection.to_string()),
            ("user_auth_required", self.user_auth_required.to_string()),
            (
                "user_auth_exempt_apps",
                list_text(&self.user_auth_exempt_apps, "none"),
            ),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
            ("update_time", ts_text(self.update_time.as_ref(), "")),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &[
            "ID", "NAME", "OWNER", "GROUP", "METHODS", "HOST", "PATH", "SCHEMES",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.owner.clone(),
            self.group_id.clone(),
            list_text(&self.methods, "any"),
            self.host.clone(),
            self.path.clone(),
            list_text(&scheme_names(&self.auth_schemes), "default"),
        ]
    }
}

fn target(g: &pb::Grant) -> (Value, Value, String) {
    use pb::grant::Target;
    match &g.target {
        Some(Target::ApiId(id)) => (json!(id), Value::Null, format!("api {id}")),
        Some(Target::GroupId(id)) => (Value::Null, json!(id), format!("group {id}")),
        None => (Value::Null, Value::Null, String::new()),
    }
}

impl Printable for pb::Permission {
    fn json(&self) -> Value {
        json!({
            "app_id": self.app_id,
            "api_id": self.api_id,
            "api_name": self.api_name,
            "grant": self.grant.as_ref().map_or(Value::Null, Printable::json),
            "expired": self.expired,
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let g = self.grant.clone().unwrap_or_default();
        vec![
            ("app_id", self.app_id.clone()),
            ("api_id", self.api_id.clone()),
            ("api_name", self.api_name.clone()),
            ("grant", g.id.clone()),
            ("via", target(&g).2),
            ("stages", list_text(&g.stages, "any")),
            ("expires_at", ts_text(g.expires_at.as_ref(), "never")),
            ("expired", self.expired.to_string()),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["APP", "API", "NAME", "GRANT", "VIA", "STAGES", "EXPIRES"]
    }
    fn row(&self) -> Vec<String> {
        let g = self.grant.clone().unwrap_or_default();
        vec![
            self.app_id.clone(),
            self.api_id.clone(),
            self.api_name.clone(),
            g.id.clone(),
            target(&g).2,
            list_text(&g.stages, "any"),
            if self.expired {
                "expired".to_owned()
            } else {
                ts_text(g.expires_at.as_ref(), "never")
            },
        ]
    }
}

impl Printable for pb::Grant {
    fn json(&self) -> Value {
        let (api, group, _) = target(self);
        json!({
            "id": self.id,
            "app_id": self.app_id,
            "api_id": api,
            "group_id": group,
            "stages": self.stages,
            "expires_at": ts(self.expires_at.as_ref()),
            "created_by": self.created_by,
            "create_time": ts(self.create_time.as_ref()),
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("app_id", self.app_id.clone()),
            ("target", target(self).2),
            ("stages", list_text(&self.stages, "any")),
            ("expires_at", ts_text(self.expires_at.as_ref(), "never")),
            ("created_by", self.created_by.clone()),
            ("create_time", ts_text(self.create_time.as_ref(), "")),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["ID", "APP", "TARGET", "STAGES", "EXPIRES"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.app_id.clone(),
            target(self).2,
            list_text(&self.stages, "any"),
            ts_text(self.expires_at.as_ref(), "never"),
        ]
    }
}

impl Printable for pb::AuditEvent {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "time": ts(self.time.as_ref()),
            "actor": self.actor,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "summary": self.summary,
        })
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.to_string()),
            ("time", ts_text(self.time.as_ref(), "")),
            ("actor", self.actor.clone()),
            ("action", self.action.clone()),
            ("resource_type", self.resource_type.clone()),
            ("resource_id", self.resource_id.clone()),
            ("summary", self.summary.clone()),
        ]
    }
    fn columns() -> &'static [&'static str] {
        &["ID", "TIME", "ACTOR", "ACTION", "RESOURCE", "SUMMARY"]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            ts_text(self.time.as_ref(), ""),
            self.actor.clone(),
            self.action.clone(),
            format!("{} {}", self.resource_type, self.resource_id),
            self.summary.clone(),
        ]
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not
/// padded so lines carry no trailing blanks.
pub fn table(out: &mut dyn Write, columns: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let header: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().map(|r| r.iter().map(|c| clean(c)).collect()))
        .collect();
    let mut widths = vec![0usize; columns.len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// One resource.
pub fn one<T: Printable>(out: &mut dyn Write, mode: Output, item: &T) -> std::io::Result<()> {
    match mode {
        Output::Json => json_out(out, &item.json()),
        Output::Table => fields(out, &item.fields()),
    }
}

/// A list: a JSON array, or a table with a header row.
pub fn many<T: Printable>(out: &mut dyn Write, mode: Output, items: &[T]) -> std::io::Result<()> {
    match mode {
        Output::Json => json_out(out, &Value::Array(items.iter().map(T::json).collect())),
        Output::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(T::row).collect();
            table(out, T::columns(), &rows)
        }
    }
}

/// `field  value` lines (a two-column table without a header).
pub fn fields(out: &mut dyn Write, f: &[(&str, String)]) -> std::io::Result<()> {
    let width = f.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in f {
        let v: String = v
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        writeln!(out, "{}", format!("{k:<width$}  {v}").trim_end())?;
    }
    Ok(())
}

pub fn json_out(out: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), String::new()],
            vec!["bbb".to_owned(), "x".to_owned(), "end".to_owned()],
        ];
        table(&mut out, &["ID", "NAME", "LAST"], &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ID   NAME        LAST\na    long value\nbbb  x           end\n"
        );
    }

    #[test]
    fn json_uses_proto_names_and_rfc3339_times() {
        let g = pb::Grant {
            id: "grt_1".into(),
            app_id: "app_1".into(),
            target: Some(pb::grant::Target::GroupId("grp_1".into())),
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_900_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let v = g.json();
        assert_eq!(v["app_id"], "app_1");
        assert_eq!(v["group_id"], "grp_1");
        assert_eq!(v["api_id"], Value::Null);
        assert_eq!(v["expires_at"], "2030-03-17T17:46:40Z");
        assert_eq!(v["create_time"], Value::Null);
    }
}
