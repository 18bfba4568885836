//! The schemas of the resources that are Meridian objects, attribute by
//! attribute against the manifest fields of docs/resources.md.

use crate::checks::{endpoint_weight, label, parse};
use crate::schema::{Attr, Block, Field, Nested};
use crate::value::{Type, Value};
use meridian_model::spec::{Health, LbPolicy, Protocol, RetryOn};

fn s() -> Type {
    Type::String
}

fn n() -> Type {
    Type::Number
}

fn b() -> Type {
    Type::Bool
}

/// `id` and `revision`, which every object resource has.
fn bookkeeping() -> Vec<Attr> {
    vec![
        Attr::computed("id", s(), Field::None, "The object's key, as `terraform import` takes it."),
        Attr::computed(
            "revision",
            n(),
            Field::None,
            "The Raft index that last changed the object; writes expect it, so a concurrent edit is reported rather than overwritten.",
        ),
    ]
}

fn labels() -> Attr {
    Attr::optional(
        "labels",
        Type::map(s()),
        Field::Meta("labels"),
        "Labels of the object.",
    )
}

fn namespace() -> Attr {
    Attr::defaulted(
        "namespace",
        s(),
        Field::Meta("namespace"),
        Value::string("default"),
        "The namespace; `default` when left out. Changing it replaces the object.",
    )
    .replace()
    .check(label)
}

fn name(what: &'static str) -> Attr {
    Attr::required("name", s(), Field::Meta("name"), what)
        .replace()
        .check(label)
}

pub fn cluster() -> Block {
    let mut attrs = vec![
        name("The cluster's name. Changing it replaces the cluster."),
        labels(),
        Attr::required(
            "region",
            s(),
            Field::Spec("region"),
            "The region the cluster is in.",
        )
        .check(label),
        Attr::optional(
            "zone",
            s(),
            Field::Spec("zone"),
            "The zone, if the cluster is in one.",
        )
        .check(label),
        Attr::computed(
            "stale",
            b(),
            Field::Status("stale"),
            "No agent has reported for longer than the grace period.",
        ),
    ];
    attrs.extend(bookkeeping());
    Block::new("A member cluster: a Kubernetes cluster or another source of endpoints, placed in a locality.", attrs, vec![])
}

fn retries() -> Nested {
    Nested::single(
        "retries",
        Field::Spec("retries"),
        Block::new(
            "Retries of idempotent requests; left out, one retry on a connect failure or a reset.",
            vec![
                Attr::required("attempts", n(), Field::Key("attempts"), "Retries after the first try (at most 10); 0 turns retries off.")
                    .check(parse::<u32>),
                Attr::optional("per_try_timeout", s(), Field::Key("perTryTimeout"), "A duration: `250ms`, `5s`, `1m`.").duration(),
                Attr::defaulted(
                    "on",
                    Type::list(s()),
                    Field::Key("on"),
                    Value::List(vec![]),
                    "What is retried: `connect-failure`, `reset`, `5xx`, `gateway-error`, `retriable-4xx`; connect failures and resets when empty.",
                )
                .check(parse::<RetryOn>),
            ],
            vec![],
        ),
    )
}

fn outlier_detection() -> Nested {
    let count =
        |name, key, what| Attr::optional(name, n(), Field::Key(key), what).check(parse::<u32>);
    Nested::single(
        "outlier_detection",
        Field::Spec("outlierDetection"),
        Block::new(
            "Passive health; every field left out takes its default (docs/resources.md).",
            vec![
                Attr::defaulted(
                    "enabled",
                    b(),
                    Field::Key("enabled"),
                    Value::Bool(true),
                    "`false` turns outlier detection off.",
                ),
                count(
                    "consecutive_5xx",
                    "consecutive5xx",
                    "Eject after this many 5xx in a row.",
                ),
                count(
                    "consecutive_gateway_errors",
                    "consecutiveGatewayErrors",
                    "Eject after this many gateway errors in a row.",
                ),
                Attr::optional("interval", s(), Field::Key("interval"), "A duration.").duration(),
                Attr::optional(
                    "base_ejection_time",
                    s(),
                    Field::Key("baseEjectionTime"),
                    "A duration.",
                )
                .duration(),
                count(
                    "max_ejection_percent",
                    "maxEjectionPercent",
                    "At most this share of hosts ejected (0-100).",
                ),
            ],
            vec![],
        ),
    )
}

fn circuit_breaker() -> Nested {
    let limit =
        |name, key| Attr::required(name, n(), Field::Key(key), "A limit.").check(parse::<u32>);
    Nested::single(
        "circuit_breaker",
        Field::Spec("circuitBreaker"),
        Block::new(
            "Limits on connections and requests to the service.",
            vec![
                limit("max_connections", "maxConnections"),
                limit("max_pending_requests", "maxPendingRequests"),
                limit("max_requests", "maxRequests"),
            ],
            vec![],
        ),
    )
}

fn health_check() -> Nested {
    let threshold = |name, key| {
        Attr::required(name, n(), Field::Key(key), "A count, at least 1.").check(parse::<u32>)
    };
    Nested::single(
        "health_check",
        Field::Spec("healthCheck"),
        Block::new(
            "Active health checks; give one `http` or one `tcp` block.",
            vec![
                Attr::required("interval", s(), Field::Key("interval"), "A duration.").duration(),
                Attr::optional("timeout", s(), Field::Key("timeout"), "A duration.").duration(),
                threshold("unhealthy_threshold", "unhealthyThreshold"),
                threshold("healthy_threshold", "healthyThreshold"),
            ],
            vec![
                Nested::single(
                    "http",
                    Field::Key("http"),
                    Block::new(
                        "An HTTP GET of `path`.",
                        vec![Attr::required(
                            "path",
                            s(),
                            Field::Key("path"),
                            "Starts with `/`.",
                        )],
                        vec![],
                    ),
                ),
                Nested::single(
                    "tcp",
                    Field::Key("tcp"),
                    Block::new("A TCP connect.", vec![], vec![]),
                ),
            ],
        ),
    )
}

fn transport() -> Nested {
    Nested::single(
        "transport",
        Field::Spec("transport"),
        Block::new(
            "How proxies carry the service's traffic between them.",
            vec![Attr::defaulted(
                "mtls",
                b(),
                Field::Key("mtls"),
                Value::Bool(false),
                "Mutual TLS between proxies.",
            )],
            vec![],
        ),
    )
}

pub fn service() -> Block {
    let mut attrs = vec![
        namespace(),
        name("The service's name. Changing it replaces the service."),
        labels(),
        Attr::required("protocol", s(), Field::Spec("protocol"), "`http`, `http2`, `grpc` or `tcp`.").check(parse::<Protocol>),
        Attr::required("port", n(), Field::Spec("port"), "The port clients call.").check(parse::<u16>),
        Attr::defaulted(
            "lb",
            s(),
            Field::Spec("lb"),
            Value::string("round_robin"),
            "`round_robin` (default), `random`, `weighted`, `least_request`, `ip_hash`, `ring_hash` or `maglev`.",
        )
        .check(parse::<LbPolicy>),
        Attr::optional("hash_on", s(), Field::Spec("hashOn"), "`source_ip` or `header:NAME`; only with the hash policies."),
        Attr::optional("timeout", s(), Field::Spec("timeout"), "A duration: `250ms`, `5s`, `1m`, `2h`.").duration(),
        Attr::optional(
            "allowed_clusters",
            Type::list(s()),
            Field::Spec("allowedClusters"),
            "Only these clusters' proxies see the service and are admitted; all when left out.",
        )
        .check(label),
    ];
    attrs.extend(bookkeeping());
    Block::new(
        "A service: what clients call as `name.namespace`, with its load balancing and resilience settings.",
        attrs,
        vec![retries(), outlier_detection(), circuit_breaker(), health_check(), transport()],
    )
}

pub fn endpoints() -> Block {
    let endpoint = Block::new(
        "One address.",
        vec![
            Attr::required("address", s(), Field::Key("address"), "An IP address."),
            Attr::required("port", n(), Field::Key("port"), "The port.").check(parse::<u16>),
            Attr::defaulted(
                "weight",
                n(),
                Field::Key("weight"),
                Value::number(1),
                "At most 1,000,000; 1 when left out.",
            )
            .check(endpoint_weight),
            Attr::optional(
                "zone",
                s(),
                Field::Key("zone"),
                "The zone the endpoint is in.",
            )
            .check(label),
            Attr::defaulted(
                "health",
                s(),
                Field::Key("health"),
                Value::string("healthy"),
                "`healthy`, `unhealthy` or `draining`.",
            )
            .check(parse::<Health>),
        ],
        vec![],
    );
    let mut attrs = vec![
        namespace(),
        Attr::required("service", s(), Field::Meta("name"), "The service these endpoints serve. Changing it replaces the object.")
            .replace()
            .check(label),
        Attr::required("cluster", s(), Field::Meta("cluster"), "The member cluster the endpoints are in (it must exist). Changing it replaces the object.")
            .replace()
            .check(label),
        labels(),
    ];
    attrs.extend(bookkeeping());
    Block::new(
        "A static set of one service's endpoints in one cluster: virtual machines, a cloud's instances.",
        attrs,
        vec![Nested::list("endpoint", Field::Spec("endpoints"), endpoint)],
    )
}

pub fn traffic_split() -> Block {
    let backend = Block::new(
        "One backend and its weight.",
        vec![
            Attr::required(
                "service",
                s(),
                Field::Key("service"),
                "`namespace/name`, or `name` in the split's namespace.",
            ),
            Attr::required("weight", n(), Field::Key("weight"), "A relative weight.")
                .check(parse::<u32>),
        ],
        vec![],
    );
    let mut attrs = vec![
        namespace(),
        name("The split's name. Changing it replaces the split."),
        labels(),
        Attr::required(
            "service",
            s(),
            Field::Spec("service"),
            "The service whose traffic is split, `namespace/name`.",
        ),
    ];
    attrs.extend(bookkeeping());
    Block::new(
        "Weights between services (versions) behind one name.",
        attrs,
        vec![Nested::list("backend", Field::Spec("backends"), backend)],
    )
}

pub fn failover_policy() -> Block {
    let mut attrs = vec![
        namespace(),
        name("The policy's name. Changing it replaces the policy."),
        labels(),
        Attr::required("service", s(), Field::Spec("service"), "The service, `namespace/name`."),
        Attr::required("order", Type::list(s()), Field::Spec("order"), "Existing clusters, in the order they take over.").check(label),
        Attr::optional("overprovisioning_factor", n(), Field::Spec("overprovisioningFactor"), "1.0 to 100 (Envoy's default 1.4)."),
        Attr::optional(
            "spill_below_healthy_share",
            n(),
            Field::Spec("spillBelowHealthyShare"),
            "0 to 1: the healthy share below which traffic spills to the next priority; instead of the factor.",
        ),
    ];
    attrs.extend(bookkeeping());
    Block::new(
        "The order of clusters a service's traffic falls back to.",
        attrs,
        vec![],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{check_with_model, from_manifest, path_of, to_manifest};
    use crate::semantic::{differs, plan_merge, read_merge, with_defaults};

    /// Every field of docs/resources.md's Service example.
    const SERVICE: &str = r#"{"kind": "Service", "metadata": {"name": "checkout", "namespace": "shop", "labels": {"team": "a"}},
      "spec": {"protocol": "http", "port": 8080, "lb": "ring_hash", "hashOn": "source_ip", "timeout": "5s",
        "retries": {"attempts": 2, "perTryTimeout": "1s", "on": ["connect-failure", "reset", "5xx"]},
        "outlierDetection": {"consecutive5xx": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50},
        "circuitBreaker": {"maxConnections": 1024, "maxPendingRequests": 1024, "maxRequests": 1024},
        "healthCheck": {"http": {"path": "/healthz"}, "interval": "5s", "unhealthyThreshold": 3, "healthyThreshold": 2},
        "allowedClusters": ["us-east-1a"], "transport": {"mtls": true}}}"#;

    #[test]
    fn a_service_round_trips_through_terraform_values() {
        let manifest: serde_json::Value = serde_json::from_str(SERVICE).expect("json");
        let block = service();
        let value = with_defaults(&block, &from_manifest(&block, &manifest));
        assert_eq!(value.get("hash_on").as_str(), Some("source_ip"));
        assert_eq!(
            value.get("health_check").as_list()[0]
                .get("http")
                .as_list()
                .len(),
            1
        );
        let back = to_manifest("Service", &block, &value).expect("known");
        let expected = serde_json::json!({"enabled": true, "consecutive5xx": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50});
        assert_eq!(back["spec"]["outlierDetection"], expected);
        assert_eq!(back["spec"]["healthCheck"], manifest["spec"]["healthCheck"]);
        assert!(check_with_model("Service", &block, &value).is_empty());
    }

    #[test]
    fn model_fields_become_attribute_paths() {
        let cases = [
            (service(), "spec.hashOn", "hash_on"),
            (
                service(),
                "spec.healthCheck.http.path",
                "health_check[0].http[0].path",
            ),
            (service(), "spec.retries.on[2]", "retries[0].on[2]"),
            (service(), "spec.allowedClusters[0]", "allowed_clusters[0]"),
            (service(), "metadata.name", "name"),
            (
                endpoints(),
                "spec.endpoints[1].weight",
                "endpoint[1].weight",
            ),
            (endpoints(), "spec.endpoints[].weight", "endpoint"),
            (endpoints(), "metadata.name", "service"),
            (
                traffic_split(),
                "spec.backends[0].service",
                "backend[0].service",
            ),
            (failover_policy(), "spec.order[1]", "order[1]"),
        ];
        for (block, field, path) in cases {
            let found = path_of(&block, field).map(|p| p.to_string());
            assert_eq!(found.as_deref(), Some(path), "{field}");
        }
    }

    #[test]
    fn the_model_refuses_with_the_field_terraform_shows() {
        let block = endpoints();
        let mut value = Value::Null;
        value.set("service", Value::string("web"));
        value.set("cluster", Value::string("east"));
        let endpoint = |address: &str, weight: u64| {
            let mut e = Value::Null;
            e.set("address", Value::string(address));
            e.set("port", Value::number(80));
            e.set("weight", Value::number(weight));
            e
        };
        value.set(
            "endpoint",
            Value::List(vec![endpoint("10.0.0.1", 1), endpoint("10.0.0.1", 2)]),
        );
        let diags = check_with_model("Endpoints", &block, &with_defaults(&block, &value));
        assert_eq!(diags.len(), 1);
        assert_eq!(
            diags[0].path.as_ref().map(|p| p.to_string()).as_deref(),
            Some("endpoint[1].address")
        );
        value.set(
            "endpoint",
            Value::List(vec![endpoint("10.0.0.1", 1), Value::Unknown]),
        );
        assert!(
            check_with_model("Endpoints", &block, &value).is_empty(),
            "unknowns wait for apply"
        );
    }

    #[test]
    fn the_same_meaning_is_no_change() {
        let block = service();
        let mut config = Value::Null;
        config.set("name", Value::string("web"));
        config.set("protocol", Value::string("http"));
        config.set("port", Value::number(80));
        config.set("timeout", Value::string("60s"));
        config.set("labels", Value::Map(Default::default()));
        let planned = with_defaults(&block, &config);
        assert_eq!(planned.get("lb").as_str(), Some("round_robin"));
        assert_eq!(planned.get("namespace").as_str(), Some("default"));
        // The control plane stores 1m, no labels, and says nothing of lb's default.
        let mut stored = planned.clone();
        stored.set("timeout", Value::string("1m"));
        stored.set("labels", Value::Null);
        stored.set("lb", Value::Null);
        let refreshed = read_merge(&block, &planned, &stored);
        for attr in &block.attrs {
            assert_eq!(
                refreshed.get(attr.name),
                planned.get(attr.name),
                "{}",
                attr.name
            );
        }
        assert!(!differs(&block, &stored, &planned));
        // After an import (1m in the state), a configuration of 60s plans the state's value.
        let imported = with_defaults(&block, &stored);
        assert_eq!(
            plan_merge(&block, &imported, &planned)
                .get("timeout")
                .as_str(),
            Some("1m")
        );
        stored.set("port", Value::number(81));
        assert!(differs(&block, &stored, &planned));
    }
}
