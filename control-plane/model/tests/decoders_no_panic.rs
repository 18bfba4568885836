//! A stand-in for `cargo fuzz` (which needs a nightly toolchain): property
//! tests that feed the manifest decoder and validation what an operator, a
//! script or an attacker could send, and assert only that it answers (a
//! resource or an error) without panicking. Three kinds of input: any text;
//! the example mesh with random bytes changed, inserted or removed; and
//! manifests built from the model's own field names with values of every
//! JSON type, to get past the parser into validation. A longer run:
//! `PROPTEST_CASES=20000 cargo test -p meridian-model --test decoders_no_panic`.

use meridian_model::{parse_manifests, Duration, Manifest, Resource};
use meridian_mutation::{edits, mutate_text};
use proptest::prelude::*;
use serde_json::{json, Value};

const EXAMPLE: &str = include_str!("../../../examples/mesh.yaml");

const KINDS: &[&str] = &[
    "Cluster",
    "Service",
    "Endpoints",
    "TrafficSplit",
    "FailoverPolicy",
    "AgentToken",
    "Token",
    "Nope",
];

/// Field names the specs and metadata use, and a few they do not.
const FIELDS: &[&str] = &[
    "name",
    "namespace",
    "cluster",
    "labels",
    "region",
    "zone",
    "protocol",
    "port",
    "lb",
    "timeout",
    "retries",
    "attempts",
    "perTryTimeout",
    "on",
    "outlierDetection",
    "consecutive5xx",
    "consecutiveGatewayErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "circuitBreaker",
    "maxConnections",
    "maxPendingRequests",
    "maxRequests",
    "healthCheck",
    "http",
    "tcp",
    "path",
    "unhealthyThreshold",
    "healthyThreshold",
    "endpoints",
    "address",
    "weight",
    "health",
    "service",
    "backends",
    "order",
    "overprovisioningFactor",
    "spillBelowHealthyShare",
    "hashOn",
    "mtls",
    "transport",
    "allowedClusters",
    "expiresAt",
    "maxUses",
    "used",
    "revoked",
    "role",
    "enabled",
    "detector",
    "items",
    "kind",
    "metadata",
    "spec",
    "status",
    "",
];

/// Strings that have broken parsers before: boundaries, odd units, huge
/// numbers as text, separators, non-ASCII.
const TRICKY: &[&str] = &[
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
     xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
     xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "",
    " ",
    "0",
    "-1",
    "1e309",
    "18446744073709551616",
    "9999999999999999999999s",
    "1h1h",
    "5",
    "5s",
    "0s",
    "-5s",
    "1.5s",
    "999999999999h",
    "ms",
    "s",
    "10.0.0.7",
    "::1",
    "[::1]",
    "256.0.0.1",
    "a/b/c",
    "/",
    "shop/",
    "/checkout",
    "shop/checkout",
    "us-east-1a",
    "Rack_A",
    "ünïcödé",
    "\u{0}",
    "\n---\n",
    "healthy",
    "unhealthy",
    "draining",
    "http",
    "grpc",
    "tcp",
    "least_request",
    "ring_hash",
    "5xx",
    "reset",
    "connect-failure",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(TRICKY).prop_map(|s| json!(s)),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

/// JSON values whose objects use the model's field names.
fn value() -> impl Strategy<Value = Value> {
    meridian_mutation::documents(FIELDS, scalar())
}

/// A manifest-shaped object: a kind, metadata and spec of any shape.
fn manifest() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(KINDS),
        value(),
        value(),
        prop::option::of(value()),
    )
        .prop_map(|(kind, metadata, spec, status)| {
            let mut object = json!({"kind": kind, "metadata": metadata, "spec": spec});
            if let Some(status) = status {
                object["status"] = status;
            }
            object
        })
}

/// Every document of the example, one at a time, so a mutation lands in it.
fn example_documents() -> Vec<&'static str> {
    EXAMPLE.split("\n---\n").collect()
}

proptest! {
    #[test]
    fn any_text_is_answered(text in "\\PC{0,400}") {
        let _ = parse_manifests(&text);
    }

    #[test]
    fn a_mutated_example_is_answered(
        document in prop::sample::select(example_documents()),
        edits in edits(1..8),
    ) {
        let _ = parse_manifests(&mutate_text(document, &edits));
    }

    #[test]
    fn generated_manifests_are_answered_as_json_and_yaml(object in manifest()) {
        let as_json = object.to_string();
        let _ = parse_manifests(&as_json);
        if let Ok(as_yaml) = serde_yaml::to_string(&object) {
            let _ = parse_manifests(&as_yaml);
        }
        // What the admin API does with a manifest it was sent as JSON.
        if let Ok(manifest) = serde_json::from_value::<Manifest>(object) {
            if let Ok(resource) = Resource::from_manifest(manifest) {
                // A valid resource round-trips through its manifest.
                let again = Resource::from_manifest(resource.to_manifest());
                prop_assert!(again.is_ok(), "{again:?}");
            }
        }
    }

    #[test]
    fn durations_are_answered(text in prop_oneof![
        "\\PC{0,24}",
        "[0-9]{1,25}(ns|us|ms|s|m|h|d|)",
        prop::sample::select(TRICKY).prop_map(str::to_string),
    ]) {
        let _ = Duration::parse(&text);
    }
}
