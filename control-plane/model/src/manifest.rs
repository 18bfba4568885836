//! Manifests as operators write them: `kind`, `metadata`, `spec`, in YAML or
//! JSON, several documents to a file.

use crate::{ModelError, Resource};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: String,
    pub metadata: serde_json::Value,
    pub spec: serde_json::Value,
    /// Written by the control plane only; ignored when an operator writes it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub status: serde_json::Value,
}

/// Parses every document in `text` into a validated resource. Accepts
/// `---`-separated YAML documents, JSON objects, and `{"items": [...]}` lists
/// as printed by `meridian get -o json`. Errors name the document (1-based).
pub fn parse_manifests(text: &str) -> Result<Vec<Resource>, ModelError> {
    let mut resources = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc_no = i + 1;
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| ModelError::Parse(format!("document {doc_no}: {e}")))?;
        let items = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Object(mut map)
                if map.contains_key("items") && !map.contains_key("kind") =>
            {
                match map.remove("items") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => {
                        return Err(ModelError::Parse(format!(
                            "document {doc_no}: items must be a list"
                        )))
                    }
                }
            }
            other => vec![other],
        };
        for item in items {
            let manifest: Manifest = serde_json::from_value(item)
                .map_err(|e| ModelError::Parse(format!("document {doc_no}: {e}")))?;
            let resource = Resource::from_manifest(manifest).map_err(|e| match e {
                ModelError::Invalid { field, message } => ModelError::Invalid {
                    field: format!("document {doc_no}: {field}"),
                    message,
                },
                ModelError::UnknownKind(kind) => ModelError::Parse(format!(
                    "document {doc_no}: {}",
                    ModelError::UnknownKind(kind)
                )),
                other => other,
            })?;
            resources.push(resource);
        }
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{spec::LbPolicy, Kind, Spec};

    const EXAMPLE: &str = r#"
kind: Cluster
metadata: {name: us-east-1a}
spec: {region: us-east-1, zone: us-east-1a}
---
kind: Service
metadata: {name: checkout, namespace: shop}
spec:
  protocol: http
  port: 8080
  lb: least_request
  timeout: 5s
  retries: {attempts: 2, perTryTimeout: 1s, on: [connect-failure, reset, 5xx]}
  outlierDetection: {consecutive5xx: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  circuitBreaker: {maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024}
  healthCheck: {http: {path: /healthz}, interval: 5s, unhealthyThreshold: 3, healthyThreshold: 2}
---
kind: Endpoints
metadata: {name: checkout, namespace: shop, cluster: us-east-1a}
spec:
  endpoints:
  - {address: 10.0.0.7, port: 8080, weight: 1, zone: us-east-1a, health: healthy}
---
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, backends: [{service: shop/checkout-v1, weight: 90}, {service: shop/checkout-v2, weight: 10}]}
---
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, order: [us-east-1a, us-west-2a], overprovisioningFactor: 1.4}
"#;

    #[test]
    fn parses_the_documented_example() {
        let resources = parse_manifests(EXAMPLE).expect("example parses");
        let kinds: Vec<Kind> = resources.iter().map(Resource::kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Cluster,
                Kind::Service,
                Kind::Endpoints,
                Kind::TrafficSplit,
                Kind::FailoverPolicy
            ]
        );
        match &resources[1].spec {
            Spec::Service(s) => assert_eq!(s.lb, LbPolicy::LeastRequest),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn round_trips_through_json() {
        for resource in parse_manifests(EXAMPLE).expect("example parses") {
            let json = serde_json::to_string(&resource).expect("serialises");
            let back: Resource = serde_json::from_str(&json).expect("parses back");
            assert_eq!(back, resource);
        }
    }

    #[test]
    fn accepts_item_lists() {
        let resources = parse_manifests(EXAMPLE).expect("example parses");
        let list = serde_json::json!({ "items": resources });
        let again = parse_manifests(&list.to_string()).expect("list parses");
        assert_eq!(again, resources);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("kind: Gateway\nmetadata: {name: a}\nspec: {}", "unknown kind"),
            ("kind: Service\nmetadata: {name: Bad_Name}\nspec: {protocol: http, port: 80}", "metadata.name"),
            ("kind: Service\nmetadata: {name: a}\nspec: {protocol: smtp, port: 80}", "spec.protocol"),
            ("kind: Service\nmetadata: {name: a}\nspec: {protocol: http, port: 80, timeout: soon}", "spec.timeout"),
            ("kind: Service\nmetadata: {name: a}\nspec: {protocol: http, port: 80, lb: round_robin, hashOn: source_ip}", "spec.hashOn"),
            (
                "kind: Endpoints\nmetadata: {name: a, cluster: c}\nspec: {endpoints: [{address: 10.0.0.1, port: 80, weight: -1}]}",
                "spec.endpoints[0].weight",
            ),
            ("kind: Endpoints\nmetadata: {name: a}\nspec: {endpoints: []}", "metadata.cluster"),
            ("kind: Cluster\nmetadata: {name: a}\nspec: {region: r, colour: blue}", "spec"),
            ("kind: Service\nmetadata: {name: a}\n", "spec"),
            ("{{{", "document 1"),
        ];
        for (text, needle) in cases {
            let err = parse_manifests(text).expect_err(text).to_string();
            assert!(
                err.contains(needle),
                "error '{err}' should mention '{needle}'"
            );
        }
    }
}
