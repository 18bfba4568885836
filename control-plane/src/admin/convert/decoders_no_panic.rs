//! A stand-in for `cargo fuzz` (which needs a nightly toolchain): property
//! tests that feed the admin API's request conversions what any caller
//! could send (kinds, keys, namespaces, revisions, labels, manifests,
//! consistency levels, member addresses, services to explain), and assert
//! that each answers without panicking, that a refusal is
//! INVALID_ARGUMENT, and that what is accepted holds together: a key
//! converts back to itself, an accepted write is planned against the
//! example mesh (applied or rejected as a write), and what it stores can be
//! sent back. Three kinds of input: any text; the example mesh's manifests,
//! as the CLI sends them, with random bytes changed, inserted or removed;
//! and requests built from the manifests' own field names with values of
//! every JSON type. A longer run:
//! `PROPTEST_CASES=20000 cargo test -p meridian-control-plane --bin meridian decoders_no_panic`.

use super::{
    consistency, delete_from_pb, key_from_pb, key_to_pb, list_scope, node_error, parse_kind,
    put_from_pb,
};
use crate::node::NodeError;
use meridian_model::{plan, Command, Kind, Resource, ResourceKey};
use meridian_mutation::{edits, mutate_text};
use meridian_proto::v1 as pb;
use meridian_routes::{MeshState, ServiceId};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::{collections::BTreeMap, sync::OnceLock};
use tonic::Code;

const MESH: &str = include_str!("../../../../examples/mesh.yaml");

/// The example mesh, each object at its own revision.
fn example() -> &'static [Resource] {
    static EXAMPLE: OnceLock<Vec<Resource>> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let mut resources = meridian_model::parse_manifests(MESH).expect("the example parses");
        for (i, resource) in resources.iter_mut().enumerate() {
            resource.metadata.revision = Some(i as u64 + 1);
        }
        resources
    })
}

/// The example's manifests as the CLI sends them (`PutRequest.manifest_json`).
fn example_json() -> Vec<String> {
    example()
        .iter()
        .map(|r| serde_json::to_string(r).expect("a resource serializes"))
        .collect()
}

/// The state the example mesh makes, as the planner reads it.
fn view() -> BTreeMap<ResourceKey, Resource> {
    example().iter().map(|r| (r.key(), r.clone())).collect()
}

const KINDS: &[&str] = &[
    "Cluster",
    "Service",
    "Endpoints",
    "TrafficSplit",
    "FailoverPolicy",
    "BootstrapToken",
    "service",
    "",
    "Nope",
];

/// Names the example uses, and ones no name rule allows.
const NAMES: &[&str] = &[
    "checkout",
    "checkout-v1",
    "shop",
    "us-east-1a",
    "us-west-2a",
    "default",
    "",
    "-a",
    "a-",
    "A",
    "shop/checkout",
    "a.b",
    "ünï",
    "\u{0}",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KINDS).prop_map(str::to_string),
        1 => "\\PC{0,12}",
    ]
}

fn revision() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(prop_oneof![
        Just(0u64),
        1..12u64,
        Just(u64::MAX),
        any::<u64>()
    ])
}

/// A key: one of the example's, any, or none.
fn key() -> impl Strategy<Value = Option<pb::ResourceKey>> {
    let examples: Vec<pb::ResourceKey> = example().iter().map(|r| key_to_pb(&r.key())).collect();
    let any_key = (kind(), name(), name(), name()).prop_map(|(kind, namespace, name, cluster)| {
        pb::ResourceKey {
            kind,
            namespace,
            name,
            cluster,
        }
    });
    prop::option::weighted(0.9, prop_oneof![prop::sample::select(examples), any_key])
}

/// Field names of metadata and of the example's specs, and a few others.
const FIELDS: &[&str] = &[
    "name",
    "namespace",
    "cluster",
    "labels",
    "revision",
    "region",
    "zone",
    "protocol",
    "port",
    "endpoints",
    "address",
    "weight",
    "health",
    "service",
    "backends",
    "order",
    "allowedClusters",
    "role",
    "expiresAt",
    "kind",
    "spec",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        name().prop_map(Value::String),
    ];
    meridian_mutation::documents(FIELDS, scalar)
}

/// Where a generated manifest changes one of the example's.
const PLACES: &[(&str, &str)] = &[
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "cluster"),
    ("metadata", "labels"),
    ("metadata", "revision"),
    ("spec", "region"),
    ("spec", "port"),
    ("spec", "endpoints"),
    ("spec", "service"),
    ("spec", "backends"),
    ("spec", "order"),
    ("spec", "allowedClusters"),
    ("", "kind"),
    ("", "status"),
];

/// A manifest: one of the example's with up to three fields replaced by
/// names, labels, revisions or values of any kind (so most get past the
/// parser, and many into planning); or one of any shape.
fn manifest() -> impl Strategy<Value = String> {
    let replacement = prop_oneof![
        3 => name().prop_map(Value::String),
        1 => prop::collection::btree_map(name(), name(), 0..3).prop_map(|m| json!(m)),
        1 => kind().prop_map(Value::String),
        2 => json_value(),
    ];
    let edited = (
        prop::sample::select(example_json()),
        prop::collection::vec((prop::sample::select(PLACES), replacement), 0..3),
    )
        .prop_map(|(manifest, changes)| {
            let mut manifest: Value = serde_json::from_str(&manifest).unwrap_or_default();
            for ((outer, field), value) in changes {
                let target = if outer.is_empty() {
                    &mut manifest
                } else {
                    &mut manifest[outer]
                };
                if let Value::Object(map) = target {
                    map.insert(field.to_string(), value);
                }
            }
            manifest.to_string()
        });
    let any_shape = (kind(), json_value(), json_value()).prop_map(|(kind, metadata, spec)| {
        json!({"kind": kind, "metadata": metadata, "spec": spec}).to_string()
    });
    prop_oneof![4 => edited, 1 => any_shape]
}

/// What the admin API answers to a refusal: INVALID_ARGUMENT, with a message.
fn invalid_argument(status: &tonic::Status) -> Result<(), TestCaseError> {
    prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    prop_assert!(!status.message().is_empty());
    Ok(())
}

/// A key as Get and Delete take it: refused as INVALID_ARGUMENT, or valid
/// and the same once sent back (as Get's answer names it).
fn check_key(key: Option<pb::ResourceKey>) -> Result<(), TestCaseError> {
    match key_from_pb(key) {
        Ok(key) => prop_assert_eq!(key_from_pb(Some(key_to_pb(&key))).ok(), Some(key)),
        Err(status) => invalid_argument(&status)?,
    }
    Ok(())
}

/// Converts a request as Apply does, then plans it against the example
/// mesh as the state machine does: applied, or rejected with a status; what
/// a write stores converts again as a Put (what Get returns can be put back).
fn apply(
    puts: Vec<pb::PutRequest>,
    deletes: Vec<pb::DeleteRequest>,
    index: u64,
) -> Result<(), TestCaseError> {
    let many = puts.len() + deletes.len() > 1;
    let mut ops = Vec::new();
    for (i, put) in puts.into_iter().enumerate() {
        let context = if many {
            format!("puts[{i}]")
        } else {
            String::new()
        };
        match put_from_pb(&context, put) {
            Ok(op) => ops.push(op),
            Err(status) => {
                invalid_argument(&status)?;
                prop_assert!(status.message().starts_with(&context));
                return Ok(());
            }
        }
    }
    for delete in deletes {
        match delete_from_pb(delete) {
            Ok(op) => ops.push(op),
            Err(status) => return invalid_argument(&status),
        }
    }
    match plan(&view(), &Command::new(ops), index) {
        Ok((writes, _revisions)) => {
            for write in writes {
                if let meridian_model::Write::Put { resource, .. } = write {
                    let manifest_json = serde_json::to_string(&resource).expect("serializes");
                    let again = put_from_pb(
                        "",
                        pb::PutRequest {
                            manifest_json,
                            expected_revision: None,
                        },
                    );
                    prop_assert!(again.is_ok(), "{:?}", again.err());
                }
            }
        }
        Err(rejection) => {
            let status = node_error(NodeError::Rejected(rejection));
            prop_assert!(!status.message().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_text_in_a_request_is_answered(
        kind in "\\PC{0,16}",
        namespace in "\\PC{0,16}",
        name in "\\PC{0,16}",
        cluster in "\\PC{0,16}",
        manifest_json in "\\PC{0,300}",
        expected_revision in revision(),
        level in any::<i32>(),
    ) {
        if let Ok(parsed) = parse_kind(&kind) {
            prop_assert_eq!(parse_kind(&parsed.to_string()).ok(), Some(parsed));
        }
        let key = pb::ResourceKey {
            kind: kind.clone(),
            namespace: namespace.clone(),
            name,
            cluster,
        };
        check_key(Some(key))?;
        if let Err(status) = list_scope(&kind, &namespace) {
            invalid_argument(&status)?;
        }
        match consistency(level) {
            Ok(_) => prop_assert!(level == 0 || level == 1),
            Err(status) => invalid_argument(&status)?,
        }
        if let Err(status) = put_from_pb("", pb::PutRequest { manifest_json, expected_revision }) {
            invalid_argument(&status)?;
        }
    }

    #[test]
    fn a_mutated_example_manifest_is_answered(
        manifest in prop::sample::select(example_json()),
        edits in edits(1..8),
        expected_revision in revision(),
        index in 1..1_000u64,
    ) {
        let manifest_json = mutate_text(&manifest, &edits);
        apply(vec![pb::PutRequest { manifest_json, expected_revision }], Vec::new(), index)?;
    }

    #[test]
    fn generated_requests_are_answered(
        puts in prop::collection::vec((manifest(), revision()), 0..3),
        deletes in prop::collection::vec((key(), revision()), 0..3),
        index in prop_oneof![Just(u64::MAX), 1..1_000u64],
    ) {
        for (key, _) in &deletes {
            check_key(key.clone())?;
        }
        let puts = puts
            .into_iter()
            .map(|(manifest_json, expected_revision)| pb::PutRequest {
                manifest_json,
                expected_revision,
            })
            .collect();
        let deletes = deletes
            .into_iter()
            .map(|(key, expected_revision)| pb::DeleteRequest { key, expected_revision })
            .collect();
        apply(puts, deletes, index)?;
    }

    #[test]
    fn lists_explanations_and_member_addresses_are_answered(
        kind in kind(),
        namespace in name(),
        service in prop_oneof![name(), (name(), name()).prop_map(|(ns, n)| format!("{ns}/{n}"))],
        cluster in name(),
        zone in name(),
        addr in prop_oneof![
            "\\PC{0,24}",
            (name(), any::<i64>()).prop_map(|(host, port)| format!("{host}:{port}")),
            Just("[::1]:7000".to_string()),
            Just("127.0.0.1:0".to_string()),
        ],
    ) {
        match list_scope(&kind, &namespace) {
            Ok((kinds, ns)) => {
                prop_assert!(!kinds.is_empty());
                // What a namespace lists is that namespace's.
                for key in example().iter().map(Resource::key) {
                    for kind in &kinds {
                        let prefix = ResourceKey::prefix(*kind, ns.as_deref());
                        if key.encode().starts_with(&prefix) {
                            prop_assert_eq!(key.kind, *kind);
                            prop_assert!(ns.is_none() || ns.as_ref() == Some(&key.namespace));
                        }
                    }
                }
            }
            Err(status) => invalid_argument(&status)?,
        }
        // Explain, as the admin API calls it when both are given.
        let state = MeshState::from_resources(example().iter().cloned());
        let service = ServiceId::parse(&service, "default");
        let _ = crate::explain::explain(&state, &service, &cluster, &zone);
        let _ = crate::server::config::check_member_addr(&addr, false);
        // With plaintext the address is resolved: only literal ones here, no DNS.
        if addr.parse::<std::net::SocketAddr>().is_ok() {
            let _ = crate::server::config::check_member_addr(&addr, true);
        }
    }
}

/// A List's namespace is a storage prefix: `shop/checkout` listed the
/// service checkout of namespace shop as if it were a namespace's.
#[test]
fn a_list_namespace_that_is_no_valid_name_is_refused() {
    let checkout = ResourceKey::new(Kind::Service, Some("shop"), "checkout", None).expect("key");
    let prefix = ResourceKey::prefix(Kind::Service, Some("shop/checkout"));
    assert!(checkout.encode().starts_with(&prefix), "what the List read");
    for namespace in ["shop/checkout", "shop/", "Shop"] {
        let refused = list_scope("Service", namespace).expect_err(namespace);
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    let (kinds, namespace) = list_scope("", "shop").expect("a valid namespace");
    assert_eq!(
        (kinds.len(), namespace.as_deref()),
        (Kind::ALL.len(), Some("shop"))
    );
    assert!(list_scope("Service", "").is_ok_and(|(_, ns)| ns.is_none()));
}
