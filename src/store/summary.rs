//! Audit summaries: what a write changed, readable by a person and never a secret.
//!
//! Owns: rendering an entity (`describe`) and the difference between two versions of
//! one (`diff`) as `field: before → after` text. Values come from the model's serde
//! form, in which `Secret` serialises as `<redacted>`, so no secret can reach the
//! audit log; a changed secret shows as no change, and its own action (a reset) says
//! what happened. Times (`*_ms` fields) are written as UTC dates, absent values as
//! `none`, empty text as `(empty)`; ids and create/update times are left out (every
//! event names its resource and has its own time).

use serde::Serialize;
use serde_json::Value;

/// Fields never listed: bookkeeping every write changes or that never changes.
const SKIPPED: [&str; 3] = ["update_ms", "create_ms", "id"];

/// `field=value` for every listed field of `entity`, for creation events.
pub(crate) fn describe(entity: &impl Serialize) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(entity) else {
        return String::new();
    };
    fields
        .iter()
        .filter(|(k, v)| !SKIPPED.contains(&k.as_str()) && !is_empty(v))
        .map(|(k, v)| format!("{k}={}", render(k, v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `field: before → after` for every listed field that differs; `no change` if none.
pub(crate) fn diff(before: &impl Serialize, after: &impl Serialize) -> String {
    let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return String::new();
    };
    let changes: Vec<String> = new
        .iter()
        .filter(|(k, _)| !SKIPPED.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let was = old.get(k).unwrap_or(&Value::Null);
            (was != v).then(|| format!("{k}: {} → {}", render(k, was), render(k, v)))
        })
        .collect();
    if changes.is_empty() {
        "no change".to_owned()
    } else {
        changes.join("; ")
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

fn render(field: &str, v: &Value) -> String {
    match v {
        Value::Null => "none".to_owned(),
        Value::String(s) if s.is_empty() => "(empty)".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) if field.ends_with("_ms") => {
            n.as_i64().and_then(date).unwrap_or_else(|| n.to_string())
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| render("", i)).collect();
            format!("[{}]", parts.join(", "))
        }
        // GrantTarget and the like: `{"Api":"api_1"}` reads as `Api api_1`.
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k} {}", render(k, v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Unix milliseconds as an RFC 3339 UTC date, seconds precision.
fn date(ms: i64) -> Option<String> {
    let secs = u64::try_from(ms.div_euclid(1000)).ok()?;
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))?;
    // httpdate panics past year 9999; such a date is written as its number.
    (secs <= 253_402_300_799).then(|| {
        let http = httpdate::fmt_http_date(t);
        // "Tue, 01 Dec 2026 09:40:33 GMT" is unambiguous and needs no calendar code.
        http.trim_end_matches(" GMT").to_owned() + " UTC"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{App, Secret};

    fn app() -> App {
        App {
            id: "app1".into(),
            name: "billing".into(),
            owner: "acme".into(),
            description: String::new(),
            tags: Default::default(),
            extend_info: String::new(),
            app_code: Some(Secret::new("app-code-s3cret")),
            enabled: true,
            create_ms: 1_700_000_000_000,
            update_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn diffs_name_fields_with_before_and_after_and_never_a_secret() {
        let before = app();
        let mut after = app();
        after.enabled = false;
        after.name = "billing-2".into();
        after.update_ms += 5;
        after.app_code = Some(Secret::new("another-s3cret"));
        let d = diff(&before, &after);
        assert_eq!(d, "enabled: true → false; name: billing → billing-2", "{d}");
        assert!(!d.contains("s3cret"));
        assert_eq!(diff(&before, &before), "no change");
        let full = describe(&before);
        assert!(
            full.contains("name=billing") && full.contains("owner=acme"),
            "{full}"
        );
        assert!(
            full.contains("app_code=<redacted>") && !full.contains("s3cret"),
            "{full}"
        );
    }

    #[test]
    fn times_are_dates_and_absent_values_none() {
        use crate::model::{Grant, GrantTarget};
        let g = Grant {
            id: "grt1".into(),
            app_id: "app1".into(),
            target: GrantTarget::Api("api1".into()),
            stages: vec!["RELEASE".into()],
            expires_ms: Some(1_798_761_600_000),
            created_by: "admin".into(),
            create_ms: 0,
        };
        let d = describe(&g);
        assert!(
            d.contains("expires_ms=Fri, 01 Jan 2027 00:00:00 UTC"),
            "{d}"
        );
        assert!(
            d.contains("target=Api api1") && d.contains("stages=[RELEASE]"),
            "{d}"
        );
        let mut later = g.clone();
        later.expires_ms = None;
        assert_eq!(
            diff(&g, &later),
            "expires_ms: Fri, 01 Jan 2027 00:00:00 UTC → none"
        );
    }
}
