//! A stand-in for `cargo fuzz` (which needs a nightly toolchain): property
//! tests that feed the agent's discovery decoders what a file, an HTTP-SD
//! endpoint or a Kubernetes API server could hand them, and assert only
//! that each answers (a view or an error) without panicking. Inputs: any
//! bytes; valid documents with random bytes changed, inserted or removed;
//! and documents built from the formats' own fields with values of every
//! JSON type. A longer run:
//! `PROPTEST_CASES=20000 cargo test -p meridian-federation --test decoders_no_panic`.

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use meridian_federation::sources::{
    file, http_sd,
    kubernetes::{build_view, KubernetesOptions},
};
use meridian_mutation::{edits, mutate, mutate_text};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;

const FILE_EXAMPLE: &str = "\
- service: shop/checkout
  endpoints:
  - {address: 10.0.0.7, port: 8080, weight: 1, zone: us-east-1a, health: healthy}
  - {address: 10.0.0.8, port: 8080, weight: 2, health: draining}
- service: web
  endpoints: []
";

const HTTP_SD_EXAMPLE: &str = r#"[{"targets": ["10.0.0.7:8080", "[::1]:80"], "labels": {"service": "checkout", "namespace": "shop", "zone": "us-east-1a", "weight": "3", "health": "unhealthy"}}]"#;

/// Values that have broken parsers before.
const TRICKY: &[&str] = &[
    "",
    ":",
    "::",
    ":80",
    "10.0.0.7:",
    "10.0.0.7:0",
    "10.0.0.7:65536",
    "10.0.0.7:-1",
    "[::1]:80",
    "[::1]",
    "::1:80",
    "host.example:80",
    "256.1.1.1:1",
    "a/b/c",
    "/",
    "shop/",
    "Rack_A",
    "us-east-1a",
    "healthy",
    "unhealthy",
    "draining",
    "zombie",
    "0",
    "-1",
    "4294967296",
    "1e3",
    "ünïcödé",
    "\u{0}",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(str::to_string),
        "\\PC{0,16}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ]
}

/// An HTTP-SD document: groups of targets and labels, the label values any text.
fn http_sd_document() -> impl Strategy<Value = Value> {
    let labels = prop::collection::btree_map(
        prop::sample::select(vec![
            "service",
            "__meta_meridian_service",
            "namespace",
            "zone",
            "weight",
            "health",
            "other",
        ]),
        text(),
        0..6,
    );
    let group = (prop::collection::vec(text(), 0..4), labels)
        .prop_map(|(targets, labels)| json!({"targets": targets, "labels": labels}));
    prop::collection::vec(group, 0..4).prop_map(Value::Array)
}

/// An endpoint file entry's fields with values of any type.
fn file_document() -> impl Strategy<Value = Value> {
    let endpoint = prop::collection::btree_map(
        prop::sample::select(vec!["address", "port", "weight", "zone", "health", "other"]),
        scalar(),
        0..6,
    );
    let entry = (text(), prop::collection::vec(endpoint, 0..4))
        .prop_map(|(service, endpoints)| json!({"service": service, "endpoints": endpoints}));
    prop::collection::vec(entry, 0..4).prop_map(Value::Array)
}

fn parsed<T: serde::de::DeserializeOwned>(value: Value) -> Option<Arc<T>> {
    serde_json::from_value(value).ok().map(Arc::new)
}

/// Kubernetes objects as an API server (or something posing as one) could
/// send them: exported services, slices with any ports, addresses and
/// conditions, nodes with zone labels.
fn kubernetes_objects() -> impl Strategy<Value = (Vec<Value>, Vec<Value>, Vec<Value>)> {
    let name = prop::sample::select(vec!["web", "db", "", "Web_1"]);
    let service = (name.clone(), prop::option::of(text()), any::<i32>()).prop_map(
        |(name, port_name, port)| {
            json!({
                "metadata": {"name": name, "namespace": "a",
                    "annotations": {"meridian.io/export": "true"}},
                "spec": {"ports": [{"name": port_name, "port": port}]}
            })
        },
    );
    let endpoint = (
        prop::collection::vec(text(), 0..3),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(addresses, zone, node, ready, terminating)| {
            json!({"addresses": addresses, "zone": zone, "nodeName": node,
                "conditions": {"ready": ready, "terminating": terminating}})
        });
    let slice = (
        name,
        prop::collection::vec(
            (prop::option::of(text()), prop::option::of(any::<i32>())),
            0..3,
        ),
        prop::collection::vec(endpoint, 0..3),
    )
        .prop_map(|(service, ports, endpoints)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(name, port)| json!({"name": name, "port": port}))
                .collect();
            json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "a",
                    "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints
            })
        });
    let node = (text(), text()).prop_map(|(name, zone)| {
        json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}}})
    });
    (
        prop::collection::vec(service, 0..3),
        prop::collection::vec(slice, 0..4),
        prop::collection::vec(node, 0..3),
    )
}

proptest! {
    #[test]
    fn any_bytes_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = http_sd::parse(&bytes);
        let _ = file::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_examples_are_answered(file_edits in edits(1..8), http_edits in edits(1..8)) {
        let _ = file::parse(&mutate_text(FILE_EXAMPLE, &file_edits));
        let _ = http_sd::parse(&mutate(HTTP_SD_EXAMPLE.as_bytes(), &http_edits));
    }

    #[test]
    fn generated_http_sd_documents_are_answered(document in http_sd_document()) {
        let _ = http_sd::parse(document.to_string().as_bytes());
    }

    #[test]
    fn generated_endpoint_files_are_answered(document in file_document()) {
        if let Ok(yaml) = serde_yaml::to_string(&document) {
            let _ = file::parse(&yaml);
        }
        let _ = file::parse(&document.to_string());
    }

    #[test]
    fn generated_kubernetes_objects_are_answered(
        (services, slices, nodes) in kubernetes_objects()
    ) {
        let services: Vec<Arc<Service>> = services.into_iter().filter_map(parsed).collect();
        let slices: Vec<Arc<EndpointSlice>> = slices.into_iter().filter_map(parsed).collect();
        let nodes: Vec<Arc<Node>> = nodes.into_iter().filter_map(parsed).collect();
        let _ = build_view(&services, &slices, &nodes, &KubernetesOptions::default());
    }
}
