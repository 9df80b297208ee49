//! `keygate api <verb>`: CreateApi, GetApi, ListApis, UpdateApi and DeleteApi, with a
//! flag for every field of an API.

use prost_types::FieldMask;

use super::{CliError, Common, Ctx, Paging};
use crate::pb::admin as pb;

#[derive(clap::Args, Debug)]
pub struct ApiCmd {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub verb: ApiVerb,
}

/// `--scheme` values, the names `keygate sign --scheme` takes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Aliyun,
    Appcode,
    Tencent,
    Bkapi,
    Sigv4,
    Rfc9421,
}

impl Scheme {
    fn proto(self) -> i32 {
        use pb::AuthScheme as A;
        (match self {
            Scheme::Aliyun => A::Aliyun,
            Scheme::Appcode => A::Appcode,
            Scheme::Tencent => A::Tencent,
            Scheme::Bkapi => A::Bkapi,
            Scheme::Sigv4 => A::Sigv4,
            Scheme::Rfc9421 => A::Rfc9421,
        }) as i32
    }
}

fn schemes(s: &[Scheme]) -> Vec<i32> {
    s.iter().map(|s| s.proto()).collect()
}

/// HTTP methods are matched upper-case; `get` on the command line means GET.
fn methods(m: Vec<String>) -> Vec<String> {
    m.into_iter().map(|m| m.to_ascii_uppercase()).collect()
}

#[derive(clap::Subcommand, Debug)]
pub enum ApiVerb {
    /// Create an API.
    Create(Box<ApiCreate>),
    /// Show one API.
    Get { id: String },
    /// List APIs.
    List {
        #[arg(long)]
        owner: Option<String>,
        /// Only the APIs of this group.
        #[arg(long, value_name = "GROUP_ID")]
        group: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Change the fields given (at least one); the others keep their values.
    Update {
        id: String,
        #[command(flatten)]
        fields: Box<ApiFields>,
    },
    /// Delete an API (and the grants on it).
    Delete { id: String },
}

#[derive(clap::Args, Debug)]
pub struct ApiCreate {
    /// Globally unique (the Envoy route may name the API by it).
    #[arg(long)]
    name: String,
    #[arg(long)]
    owner: String,
    /// Path template: `/users/{id}`, `/files/{*rest}`.
    #[arg(long)]
    path: String,
    /// The group the API belongs to.
    #[arg(long, value_name = "GROUP_ID", default_value = "")]
    group: String,
    #[arg(long, default_value = "")]
    description: String,
    /// Host to match (no port; default: any host).
    #[arg(long, default_value = "")]
    host: String,
    /// A method to match (repeatable; default: any method).
    #[arg(long = "method", value_name = "METHOD")]
    methods: Vec<String>,
    /// A scheme accepted (repeatable). Default: every scheme whose secret never
    /// travels (aliyun, tencent, sigv4, rfc9421); appcode and bkapi must be listed.
    #[arg(long = "scheme", value_enum, value_name = "SCHEME")]
    schemes: Vec<Scheme>,
    /// No credential needed (a request that carries one is still verified).
    #[arg(long)]
    anonymous_allowed: bool,
    /// The signature must cover the body, and the body is checked.
    #[arg(long)]
    body_digest_required: bool,
    /// Tencent: strip /release, /test, /prepub from the path before signing.
    #[arg(long)]
    tencent_strip_env_prefix: bool,
    /// SigV4: the region accepted (default: any).
    #[arg(long, default_value = "")]
    sigv4_region: String,
    /// SigV4: the service accepted (default: any).
    #[arg(long, default_value = "")]
    sigv4_service: String,
    /// Alibaba: X-Ca-Timestamp and X-Ca-Nonce are mandatory.
    #[arg(long)]
    replay_protection: bool,
    /// The request must also carry a valid user token (JWT).
    #[arg(long)]
    user_auth_required: bool,
    /// An app that needs no user token on this API (repeatable).
    #[arg(long = "user-auth-exempt-app", value_name = "APP_ID")]
    user_auth_exempt_apps: Vec<String>,
}

/// The fields `api update` may change: the update mask is exactly the flags given.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = true)]
pub struct ApiFields {
    #[arg(long)]
    name: Option<String>,
    /// The group (`""`: none).
    #[arg(long, value_name = "GROUP_ID")]
    group: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Host to match (`""`: any host).
    #[arg(long)]
    host: Option<String>,
    /// Replaces the methods with the ones given (repeatable).
    #[arg(long = "method", value_name = "METHOD")]
    methods: Vec<String>,
    /// Match any method.
    #[arg(long, conflicts_with = "methods")]
    clear_methods: bool,
    #[arg(long)]
    path: Option<String>,
    /// Replaces the schemes with the ones given (repeatable).
    #[arg(long = "scheme", value_enum, value_name = "SCHEME")]
    schemes: Vec<Scheme>,
    /// Back to the default schemes (aliyun, tencent, sigv4, rfc9421).
    #[arg(long, conflicts_with = "schemes")]
    clear_schemes: bool,
    #[arg(long, value_name = "true|false")]
    anonymous_allowed: Option<bool>,
    #[arg(long, value_name = "true|false")]
    body_digest_required: Option<bool>,
    #[arg(long, value_name = "true|false")]
    tencent_strip_env_prefix: Option<bool>,
    /// `""`: any region.
    #[arg(long)]
    sigv4_region: Option<String>,
    /// `""`: any service.
    #[arg(long)]
    sigv4_service: Option<String>,
    #[arg(long, value_name = "true|false")]
    replay_protection: Option<bool>,
    #[arg(long, value_name = "true|false")]
    user_auth_required: Option<bool>,
    /// Replace the apps that need no user token (repeatable).
    #[arg(long = "user-auth-exempt-app", value_name = "APP_ID")]
    user_auth_exempt_apps: Vec<String>,
    /// No app is exempt from the user token any more.
    #[arg(long, conflicts_with = "user_auth_exempt_apps")]
    clear_user_auth_exempt_apps: bool,
}

impl ApiFields {
    fn request(self, id: String) -> pb::UpdateApiRequest {
        let mut api = pb::Api {
            id,
            ..Default::default()
        };
        let mut paths: Vec<&str> = Vec::new();
        macro_rules! set {
            ($flag:expr, $field:ident, $path:literal) => {
                if let Some(v) = $flag {
                    api.$field = v;
                    paths.push($path);
                }
            };
        }
        set!(self.name, name, "name");
        set!(self.group, group_id, "group_id");
        set!(self.description, description, "description");
        set!(self.host, host, "host");
        if !self.methods.is_empty() || self.clear_methods {
            api.methods = methods(self.methods);
            paths.push("methods");
        }
        set!(self.path, path, "path");
        if !self.schemes.is_empty() || self.clear_schemes {
            api.auth_schemes = schemes(&self.schemes);
            paths.push("auth_schemes");
        }
        set!(
            self.anonymous_allowed,
            anonymous_allowed,
            "anonymous_allowed"
        );
        set!(
            self.body_digest_required,
            body_digest_required,
            "body_digest_required"
        );
        set!(
            self.tencent_strip_env_prefix,
            tencent_strip_env_prefix,
            "tencent_strip_env_prefix"
        );
        set!(self.sigv4_region, sigv4_region, "sigv4_region");
        set!(self.sigv4_service, sigv4_service, "sigv4_service");
        set!(
            self.replay_protection,
            replay_protection,
            "replay_protection"
        );
        set!(
            self.user_auth_required,
            user_auth_required,
            "user_auth_required"
        );
        if !self.user_auth_exempt_apps.is_empty() || self.clear_user_auth_exempt_apps {
            api.user_auth_exempt_apps = self.user_auth_exempt_apps;
            paths.push("user_auth_exempt_apps");
        }
        pb::UpdateApiRequest {
            api: Some(api),
            update_mask: Some(FieldMask {
                paths: paths.into_iter().map(str::to_owned).collect(),
            }),
        }
    }
}

pub async fn run(mut ctx: Ctx, verb: ApiVerb) -> Result<(), CliError> {
    match verb {
        ApiVerb::Create(a) => {
            let a = *a;
            let req = pb::CreateApiRequest {
                api: Some(pb::Api {
                    name: a.name,
                    owner: a.owner,
                    group_id: a.group,
                    description: a.description,
                    host: a.host,
                    methods: methods(a.methods),
                    path: a.path,
                    auth_schemes: schemes(&a.schemes),
                    anonymous_allowed: a.anonymous_allowed,
                    body_digest_required: a.body_digest_required,
                    tencent_strip_env_prefix: a.tencent_strip_env_prefix,
                    sigv4_region: a.sigv4_region,
                    sigv4_service: a.sigv4_service,
                    replay_protection: a.replay_protection,
                    user_auth_required: a.user_auth_required,
                    user_auth_exempt_apps: a.user_auth_exempt_apps,
                    ..Default::default()
                }),
            };
            let api = ctx.client().await?.create_api(req).await?.into_inner();
            ctx.one(&api)
        }
        ApiVerb::Get { id } => {
            let api = ctx
                .client()
                .await?
                .get_api(pb::GetApiRequest { id })
                .await?
                .into_inner();
            ctx.one(&api)
        }
        ApiVerb::List {
            owner,
            group,
            paging,
        } => {
            let (owner, group_id) = (owner.unwrap_or_default(), group.unwrap_or_default());
            ctx.list(&paging, |mut c, page_size, page_token| {
                let req = pb::ListApisRequest {
                    page_size,
                    page_token,
                    owner: owner.clone(),
                    group_id: group_id.clone(),
                };
                async move {
                    let r = c.list_apis(req).await?.into_inner();
                    Ok((r.apis, r.next_page_token))
                }
            })
            .await
        }
        ApiVerb::Update { id, fields } => {
            let api = ctx
                .client()
                .await?
                .update_api(fields.request(id))
                .await?
                .into_inner();
            ctx.one(&api)
        }
        ApiVerb::Delete { id } => {
            ctx.client()
                .await?
                .delete_api(pb::DeleteApiRequest { id: id.clone() })
                .await?;
            ctx.deleted("api", &id)
        }
    }
}
