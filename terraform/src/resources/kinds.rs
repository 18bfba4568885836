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
