//! The declarative configuration file (`version: keygate/v1`), YAML.
//!
//! Owns: the file's schema (documented in README "Declarative configuration"), its
//! conversion to and from the admin API's `Config`, and pointing an error at its line:
//! YAML and schema errors carry the parser's line and column; the server's
//! `INVALID_ARGUMENT: apis[2].path: ...` is located in the file by its entry and key.
//!
//! What a file never holds: secrets (a key pair the apply creates takes its secret
//! from `secret_file` or `secret_env`, else one is generated and printed once),
//! AppCodes and times other than expiries. Fields at their default are left out on
//! export, so a file stays short and a second export is identical to the first.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CliError;
use super::time::{format_ts, parse_ts};
use crate::pb::admin as pb;

/// The only schema version this keygate reads and writes.
pub const VERSION: &str = "keygate/v1";

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_pairs: Vec<KeyEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apis: Vec<ApiEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantEntry>,
    /// Owners' declared stages; an owner not listed keeps its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_stages: Vec<OwnerStagesEntry>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnerStagesEntry {
    pub owner: String,
    pub stages: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub extend_info: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub app_key: String,
    /// The app: its id, or its name when unique in the file.
    pub app: String,
    /// The pair created with the app (one per app; cannot change).
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// For a key pair the apply creates: read its secret from this file (a path
    /// relative to the configuration file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// ... or from this environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    pub owner: String,
    /// The group: its id, or its name when unique in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    pub path: String,
    /// aliyun, appcode, tencent, bkapi, sigv4, rfc9421; none: every scheme whose
    /// secret never travels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemes: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub anonymous_allowed: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub body_digest_required: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tencent_strip_env_prefix: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sigv4_region: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sigv4_service: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay_protection: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub user_auth_required: bool,
    /// Apps (ids) that need no user token on this API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_auth_exempt_apps: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The app: its id, or its name when unique in the file.
    pub app: String,
    /// Exactly one of `api` and `group` (id, or a name unique in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// An error in a file, with where it is when that is known.
pub fn file_error(path: &str, line: Option<usize>, message: impl std::fmt::Display) -> CliError {
    match line {
        Some(l) => CliError::Usage(format!("{path}:{l}: {message}")),
        None => CliError::Usage(format!("{path}: {message}")),
    }
}

/// Parses a file's text; errors carry the line and column.
pub fn parse(path: &str, text: &str) -> Result<File, CliError> {
    let file: File = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        // The parser's message ends with its own "at line L column C".
        file_error(path, line, e)
    })?;
    if file.version != VERSION {
        return Err(file_error(
            path,
            locate(text, "version", None, None),
            format!(
                "version: '{}' is not a schema this keygate reads (use {VERSION})",
                file.version
            ),
        ));
    }
    Ok(file)
}

fn time_in(
    path: &str,
    text: &str,
    list: &str,
    i: usize,
    t: &Option<String>,
) -> Result<Option<prost_types::Timestamp>, CliError> {
    t.as_deref()
        .map(|s| {
            parse_ts(s).map_err(|e| {
                file_error(
                    path,
                    locate(text, list, Some(i), Some("expires_at")),
                    format!("{list}[{i}].expires_at: {e}"),
                )
            })
        })
        .transpose()
}

/// The file as the admin API's `Config`; `base` is the file's directory (for
/// `secret_file`).
pub fn to_config(
    path: &str,
    text: &str,
    f: &File,
    base: &std::path::Path,
) -> Result<pb::Config, CliError> {
    let mut c = pb::Config::default();
    for a in &f.apps {
        c.apps.push(pb::App {
            id: a.id.clone(),
            name: a.name.clone(),
            owner: a.owner.clone(),
            description: a.description.clone(),
            tags: a.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            extend_info: a.extend_info.clone(),
            enabled: a.enabled,
            ..Default::default()
        });
    }
    for (i, k) in f.key_pairs.iter().enumerate() {
        let here = |field| locate(text, "key_pairs", Some(i), Some(field));
        let secret = match (&k.secret_file, &k.secret_env) {
            (Some(_), Some(_)) => {
                return Err(file_error(
                    path,
                    here("secret_env"),
                    format!("key_pairs[{i}]: set secret_file or secret_env, not both"),
                ));
            }
            (Some(p), None) => {
                let full = base.join(p);
                let s = std::fs::read_to_string(&full).map_err(|e| {
                    file_error(
                        path,
                        here("secret_file"),
                        format!("key_pairs[{i}].secret_file: {}: {e}", full.display()),
                    )
                })?;
                s.strip_suffix("\r\n")
                    .or_else(|| s.strip_suffix('\n'))
                    .unwrap_or(&s)
                    .to_owned()
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                file_error(
                    path,
                    here("secret_env"),
                    format!("key_pairs[{i}].secret_env: the variable {var} is not set"),
                )
            })?,
            (None, None) => String::new(),
        };
        c.key_pairs.push(pb::KeyPair {
            app_key: k.app_key.clone(),
            app_id: k.app.clone(),
            app_secret: secret,
            is_default: k.default,
            enabled: k.enabled,
            expires_at: time_in(path, text, "key_pairs", i, &k.expires_at)?,
            name: k.name.clone(),
            description: k.description.clone(),
            ..Default::default()
        });
    }
    for g in &f.groups {
        c.groups.push(pb::Group {
            id: g.id.clone(),
            name: g.name.clone(),
            owner: g.owner.clone(),
            description: g.description.clone(),
            ..Default::default()
        });
    }
    for (i, a) in f.apis.iter().enumerate() {
        let mut schemes = Vec::new();
        for (j, s) in a.schemes.iter().enumerate() {
            let scheme = pb::AuthScheme::from_str_name(&s.to_ascii_uppercase())
                .filter(|s| *s != pb::AuthScheme::Unspecified)
                .ok_or_else(|| {
                    file_error(
                        path,
                        locate(text, "apis", Some(i), Some("schemes")),
                        format!(
                            "apis[{i}].schemes[{j}]: '{s}' is not one of aliyun, appcode, tencent, bkapi, sigv4, rfc9421"
                        ),
                    )
                })?;
            schemes.push(scheme as i32);
        }
        c.apis.push(pb::Api {
            id: a.id.clone(),
            name: a.name.clone(),
            owner: a.owner.clone(),
            group_id: a.group.clone().unwrap_or_default(),
            description: a.description.clone(),
            host: a.host.clone(),
            methods: a.methods.clone(),
            path: a.path.clone(),
            auth_schemes: schemes,
            anonymous_allowed: a.anonymous_allowed,
            body_digest_required: a.body_digest_required,
            tencent_strip_env_prefix: a.tencent_strip_env_prefix,
            sigv4_region: a.sigv4_region.clone(),
            sigv4_service: a.sigv4_service.clone(),
            replay_protection: a.replay_protection,
            user_auth_required: a.user_auth_required,
            user_auth_exempt_apps: a.user_auth_exempt_apps.clone(),
            ..Default::default()
        });
    }
    for o in &f.owner_stages {
        c.owner_stages.push(pb::OwnerStages {
            owner: o.owner.clone(),
            stages: o.stages.clone(),
            declared: true,
        });
    }
    for (i, g) in f.grants.iter().enumerate() {
        let target = match (&g.api, &g.group) {
            (Some(api), None) => pb::grant::Target::ApiId(api.clone()),
            (None, Some(group)) => pb::grant::Target::GroupId(group.clone()),
            _ => {
                return Err(file_error(
                    path,
                    locate(text, "grants", Some(i), None),
                    format!("grants[{i}]: set exactly one of api and group"),
                ));
            }
        };
        c.grants.push(pb::Grant {
            id: g.id.clone(),
            app_id: g.app.clone(),
            target: Some(target),
            stages: g.stages.clone(),
            expires_at: time_in(path, text, "grants", i, &g.expires_at)?,
            ..Default::default()
        });
    }
    Ok(c)
}

/// The admin API's `Config` as a file.
pub fn from_config(c: &pb::Config) -> File {
    let time = |t: &Option<prost_types::Timestamp>| t.as_ref().map(format_ts);
    File {
        version: VERSION.to_owned(),
        apps: c
            .apps
            .iter()
            .map(|a| AppEntry {
                id: a.id.clone(),
                name: a.name.clone(),
                owner: a.owner.clone(),
                description: a.description.clone(),
                tags: a.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                extend_info: a.extend_info.clone(),
                enabled: a.enabled,
            })
            .collect(),
        key_pairs: c
            .key_pairs
            .iter()
            .map(|k| KeyEntry {
                app_key: k.app_key.clone(),
                app: k.app_id.clone(),
                default: k.is_default,
                name: k.name.clone(),
                description: k.description.clone(),
                enabled: k.enabled,
                expires_at: time(&k.expires_at),
                secret_file: None,
                secret_env: None,
            })
            .collect(),
        groups: c
            .groups
            .iter()
            .map(|g| GroupEntry {
                id: g.id.clone(),
                name: g.name.clone(),
                owner: g.owner.clone(),
                description: g.description.clone(),
            })
            .collect(),
        apis: c
            .apis
            .iter()
            .map(|a| ApiEntry {
                id: a.id.clone(),
                name: a.name.clone(),
                owner: a.owner.clone(),
                group: (!a.group_id.is_empty()).then(|| a.group_id.clone()),
                description: a.description.clone(),
                host: a.host.clone(),
                methods: a.methods.clone(),
                path: a.path.clone(),
                schemes: a
                    .auth_schemes
                    .iter()
                    .filter_map(|s| pb::AuthScheme::try_from(*s).ok())
                    .map(|s| s.as_str_name().to_ascii_lowercase())
                    .collect(),
                anonymous_allowed: a.anonymous_allowed,
                body_digest_required: a.body_digest_required,
                tencent_strip_env_prefix: a.tencent_strip_env_prefix,
                sigv4_region: a.sigv4_region.clone(),
                sigv4_service: a.sigv4_service.clone(),
                replay_protection: a.replay_protection,
                user_auth_required: a.user_auth_required,
                user_auth_exempt_apps: a.user_auth_exempt_apps.clone(),
            })
            .collect(),
        grants: c
            .grants
            .iter()
            .map(|g| GrantEntry {
                id: g.id.clone(),
                app: g.app_id.clone(),
                api: match &g.target {
                    Some(pb::grant::Target::ApiId(a)) => Some(a.clone()),
                    _ => None,
                },
                group: match &g.target {
                    Some(pb::grant::Target::GroupId(g)) => Some(g.clone()),
                    _ => None,
                },
                stages: g.stages.clone(),
                expires_at: time(&g.expires_at),
            })
            .collect(),
        owner_stages: c
            .owner_stages
            .iter()
            .map(|o| OwnerStagesEntry {
                owner: o.owner.clone(),
                stages: o.stages.clone(),
            })
            .collect(),
    }
}

/// The file's text, with a header saying what it is and is not.
pub fn render(f: &File) -> Result<String, CliError> {
    let body = serde_yaml_ng::to_string(f)
        .map_err(|e| CliError::Usage(format!("cannot write the configuration: {e}")))?;
    Ok(format!(
        "# keygate configuration (keygate export). Secrets and AppCodes are never part of it;\n\
         # `keygate apply -f FILE` makes a keygate match it.\n{body}"
    ))
}

/// The server names a field by the proto; the file names some differently.
fn file_key(proto_field: &str) -> &str {
    let base = proto_field.split('[').next().unwrap_or(proto_field);
    match base {
        "app_id" => "app",
        "group_id" => "group",
        "api_id" => "api",
        "auth_schemes" => "schemes",
        "is_default" => "default",
        "app_secret" => "secret_file",
        other => other,
    }
}

/// The 1-based line of a server error such as `apis[2].path: ...` in `text`.
pub fn locate_error(text: &str, message: &str) -> Option<usize> {
    let (list, rest) = message.split_once('[')?;
    let (index, rest) = rest.split_once(']')?;
    let index: usize = index.parse().ok()?;
    let field = rest
        .strip_prefix('.')
        .map(|r| r.split([':', '.']).next().unwrap_or(r))
        .map(file_key);
    locate(text, list.trim(), Some(index), field)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The 1-based line of top-level key `list`, of its entry `index` (a block
/// sequence), and of `field` in that entry when it is written there.
pub fn locate(text: &str, list: &str, index: Option<usize>, field: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            indent(l) == 0 && l.trim_end().strip_suffix(':').map(str::trim_end) == Some(list)
        })
        .or_else(|| {
            lines
                .iter()
                .position(|l| indent(l) == 0 && l.starts_with(&format!("{list}:")))
        })?;
    let Some(index) = index else {
        return Some(start + 1);
    };
    let mut entries: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut dash: Option<usize> = None;
    let mut n = 0;
    let mut current: Option<usize> = None;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(l) == 0 && !t.starts_with('-') {
            end = i;
            break;
        }
        if t.starts_with("- ") || t == "-" {
            let d = *dash.get_or_insert(indent(l));
            if indent(l) == d {
                if let Some(e) = current.and_then(|c| entries.get_mut(&c)) {
                    e.1 = i;
                }
                entries.insert(n, (i, lines.len()));
                current = Some(n);
                n += 1;
            }
        }
    }
    if let Some(c) = current
        && let Some(e) = entries.get_mut(&c)
    {
        e.1 = e.1.min(end);
    }
    let (first, last) = *entries.get(&index)?;
    if let Some(field) = field {
        for (i, l) in lines.iter().enumerate().take(last).skip(first) {
            let t = l.trim_start().trim_start_matches("- ");
            if t.starts_with(&format!("{field}:")) {
                return Some(i + 1);
            }
        }
    }
    Some(first + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "version: keygate/v1\napps:\n  - id: a\n    name: A\n    owner: o\napis:\n  - name: one\n    owner: o\n    path: /one\n  # a comment\n  - name: two\n    owner: o\n    path: two\n    schemes: [aliyun]\ngrants:\n  - app: a\n    api: one\n";

    #[test]
    fn server_errors_point_at_their_line() {
        assert_eq!(
            locate_error(TEXT, "apis[1].path: must start with '/'"),
            Some(13)
        );
        assert_eq!(
            locate_error(TEXT, "apis[0]: the same API as apis[1]"),
            Some(7)
        );
        assert_eq!(locate_error(TEXT, "apis[1].auth_schemes[0]: bad"), Some(14));
        assert_eq!(locate_error(TEXT, "grants[0].api_id: no API"), Some(17));
        assert_eq!(locate_error(TEXT, "apps[0].app_code: x"), Some(3));
        assert_eq!(locate_error(TEXT, "apis[5].path: x"), None);
    }

    #[test]
    fn schema_errors_have_a_line() {
        let e = parse(
            "f.yaml",
            "version: keygate/v1\napps:\n  - name: A\n    owner: o\n    colour: red\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.yaml:5:") && e.contains("colour"), "{e}");
        let e = parse("f.yaml", "version: keygate/v9\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml:1: version:"), "{e}");
        let e = parse("f.yaml", "version: keygate/v1\napps: [\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.yaml:"), "{e}");
    }

    #[test]
    fn a_file_survives_the_round_trip_through_config() {
        let f = parse("f.yaml", TEXT).unwrap();
        let c = to_config("f.yaml", TEXT, &f, std::path::Path::new(".")).unwrap();
        assert_eq!(from_config(&c), f);
    }
}
