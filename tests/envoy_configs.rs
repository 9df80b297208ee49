//! The example Envoy configs (`examples/envoy/*.yaml`) checked against Envoy's own
//! protos, as Envoy would parse them: every field name, enum value and `typed_config`
//! type must exist (unknown fields are errors), and the settings keygate relies on
//! must be there (fail closed, the ports and path prefix keygate serves by default).
//!
//! Envoy itself cannot be installed on the build machines; this catches the errors a
//! config can have short of running it. The protos are those shipped by the
//! envoy-types crate keygate is built with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

fn pool() -> DescriptorPool {
    let root = Path::new(env!("KEYGATE_ENVOY_PROTO_DIR"));
    let includes =
        ["data-plane-api", "xds", "protoc-gen-validate", "googleapis"].map(|d| root.join(d));
    let mut c = protox::Compiler::new(includes).unwrap();
    c.include_imports(true)
        .open_files([
            "envoy/config/bootstrap/v3/bootstrap.proto",
            "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
            "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
            "envoy/extensions/filters/http/router/v3/router.proto",
            "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
        ])
        .unwrap_or_else(|e| panic!("compiling Envoy's protos: {e}"));
    c.descriptor_pool()
}

/// Parses `examples/envoy/<name>` as an Envoy `Bootstrap` (proto3 JSON mapping, as
/// Envoy reads YAML) and returns it as JSON for the assertions.
fn load(pool: &DescriptorPool, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/envoy")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bootstrap = pool
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .unwrap();
    DynamicMessage::deserialize(bootstrap, value.clone())
        .unwrap_or_else(|e| panic!("{name} is not a valid Envoy Bootstrap: {e}"));
    value
}

fn ext_authz(config: &Value) -> &Value {
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_array().unwrap();
    assert_eq!(
        filters.last().unwrap()["name"],
        "envoy.filters.http.router",
        "the router must be the last HTTP filter"
    );
    let authz = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .expect("an ext_authz filter");
    &authz["typed_config"]
}

fn cluster_port(config: &Value, name: &str) -> u64 {
    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    let c = clusters.iter().find(|c| c["name"] == name).unwrap();
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        ["port_value"]
        .as_u64()
        .unwrap()
}

#[test]
fn grpc_example_is_valid_and_fails_closed() {
    let pool = pool();
    let config = load(&pool, "envoy-grpc.yaml");
    let authz = ext_authz(&config);
    assert_eq!(authz["failure_mode_allow"], false);
    assert_eq!(authz["transport_api_version"], "V3");
    assert_eq!(authz["with_request_body"]["pack_as_bytes"], true);
    let cluster = authz["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .unwrap();
    // keygate's default check listener.
    assert_eq!(cluster_port(&config, cluster), 50051);
}

#[test]
fn http_example_is_valid_and_matches_the_http_front_door() {
    let pool = pool();
    let config = load(&pool, "envoy-http.yaml");
    let authz = ext_authz(&config);
    assert_eq!(authz["failure_mode_allow"], false);
    let svc = &authz["http_service"];
    assert_eq!(
        svc["path_prefix"],
        keygate::server::door::envoy_http::PREFIX
    );
    assert_eq!(
        svc["authorization_response"]["allowed_upstream_headers"]["patterns"][0]["prefix"],
        "x-keygate-"
    );
    // The headers each scheme signs must reach keygate.
    let allowed: Vec<String> = authz["allowed_headers"]["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    for needed in [
        "x-ca-",
        "content-md5",
        "x-date",
        "x-apigw-nonce",
        "x-bkapi-authorization",
        "x-amz-",
        "signature-input",
        "content-digest",
        "x-envoy-auth-partial-body",
    ] {
        assert!(
            allowed.iter().any(|p| p.contains(&format!("\"{needed}\""))),
            "allowed_headers lacks {needed}: {allowed:?}"
        );
    }
    // Bodies bigger than keygate takes would be cut, never silently allowed.
    let max = authz["with_request_body"]["max_request_bytes"]
        .as_u64()
        .unwrap();
    assert!(max as usize <= keygate::config::Limits::default().max_request_body_bytes);
    assert_eq!(authz["with_request_body"]["allow_partial_message"], false);
    let cluster = svc["server_uri"]["cluster"].as_str().unwrap();
    // keygate's default http listener.
    assert_eq!(cluster_port(&config, cluster), 8081);
}

#[test]
fn a_misspelt_field_or_unknown_type_is_caught() {
    let pool = pool();
    let bootstrap = pool
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/envoy-grpc.yaml"),
    )
    .unwrap();
    for (from, to) in [
        ("failure_mode_allow: false", "failure_mode_alow: false"),
        ("ext_authz.v3.ExtAuthz\n", "ext_authz.v3.ExtAuth\n"),
        ("transport_api_version: V3", "transport_api_version: V4"),
    ] {
        assert!(text.contains(from), "{from}");
        let broken: Value = serde_yaml_ng::from_str(&text.replacen(from, to, 1)).unwrap();
        assert!(
            DynamicMessage::deserialize(bootstrap.clone(), broken).is_err(),
            "{to} was accepted"
        );
    }
}
