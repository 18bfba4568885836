//! Envoy messages built from the fields the proxy reads, with values of
//! every kind: empty and shared names, huge and zero numbers, enum values
//! that do not exist, sub-messages missing, durations out of range, and
//! typed configurations that are not what their type URL says.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::OutlierDetection,
            cluster::v3::{circuit_breakers::Thresholds, cluster, CircuitBreakers, Cluster},
            core::v3::{
                address, health_check::HealthChecker, socket_address::PortSpecifier,
                transport_socket, Address, HealthCheck, Locality, Metadata, Pipe, SocketAddress,
                TransportSocket,
            },
            endpoint::v3::{
                cluster_load_assignment::Policy, lb_endpoint::HostIdentifier,
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
            },
            listener::v3::{filter, Filter, FilterChain, Listener},
            route::v3::{
                route::Action,
                route_action::{
                    hash_policy::{ConnectionProperties, Header, PolicySpecifier},
                    ClusterSpecifier, HashPolicy,
                },
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
                RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
                WeightedCluster,
            },
        },
        extensions::filters::network::{
            http_connection_manager::v3::{
                http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
            },
            tcp_proxy::v3::{tcp_proxy, TcpProxy},
        },
        extensions::transport_sockets::tls::v3::UpstreamTlsContext,
    },
    google::protobuf::{value::Kind, Any, Duration, ListValue, Struct, UInt32Value, Value},
};
use meridian_proto::xds::{ALLOWED_CLUSTERS, METADATA_NAMESPACE};
use proptest::{option::of, prelude::*};
use prost::{Message, Name};

/// Names shared by every kind of resource, so that generated routes,
/// listeners and clusters refer to one another (and to the compiled ones).
const NAMES: &[&str] = &[
    "checkout.shop",
    "checkout-v1.shop",
    "checkout-v2.shop",
    "outbound_8080",
    "ghost.shop",
    "",
    " ",
    "ünïcödé",
    "a/b:c",
];

/// Strings that have broken parsers before.
const TRICKY: &[&str] = &[
    "",
    "*",
    "/",
    "//",
    "web.shop",
    "WEB.SHOP:8080",
    "10.0.0.7",
    "::1",
    "[::1]",
    "256.0.0.1",
    "spiffe://",
    "spiffe://mesh.test/cluster/",
    "5xx,gateway-error,reset,connect-failure",
    ",,,",
    "envoy.transport_sockets.tls",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "\u{0}",
    "ünïcödé",
];

pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(str::to_string),
        1 => "\\PC{0,8}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(str::to_string),
        "\\PC{0,12}",
    ]
}

fn number() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(100),
        Just(u32::MAX),
        Just(u32::MAX / 2 + 1),
        any::<u32>(),
    ]
}

fn value() -> impl Strategy<Value = Option<UInt32Value>> {
    of(number().prop_map(|value| UInt32Value { value }))
}

fn duration() -> impl Strategy<Value = Option<Duration>> {
    // Protobuf allows ±315,576,000,000 s and nanos below a second; a
    // sender need not keep to that.
    let seconds = prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(315_576_000_000),
        Just(315_576_000_001),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ];
    let nanos = prop_oneof![
        Just(0i32),
        Just(999_999_999),
        Just(1_000_000_000),
        Just(-1),
        Just(i32::MAX),
        any::<i32>(),
    ];
    of((seconds, nanos).prop_map(|(seconds, nanos)| Duration { seconds, nanos }))
}

/// An enum field: the values that exist, and some that do not.
fn enum_value(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![0..=known, Just(-1), Just(i32::MAX), any::<i32>()]
}

fn any_of<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A typed configuration: `message`, or bytes that are not one, under its
/// type URL or another.
fn typed<M: Message + Name + 'static>(
    message: impl Strategy<Value = M>,
) -> impl Strategy<Value = Any> {
    prop_oneof![
        3 => message.prop_map(|m| any_of(&m)),
        1 => (text(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(type_url, value)| Any { type_url, value }),
        1 => prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|value| Any { type_url: M::type_url(), value }),
    ]
}

fn address() -> impl Strategy<Value = Option<Address>> {
    let port = of(prop_oneof![
        3 => prop_oneof![Just(0u32), Just(8080), Just(65_535), Just(65_536), any::<u32>()]
            .prop_map(PortSpecifier::PortValue),
        1 => text().prop_map(PortSpecifier::NamedPort),
    ]);
    let socket = (text(), port).prop_map(|(address, port_specifier)| {
        address::Address::SocketAddress(SocketAddress {
            address,
            port_specifier,
            ..Default::default()
        })
    });
    let pipe = text().prop_map(|path| address::Address::Pipe(Pipe { path, mode: 0 }));
    of(of(prop_oneof![4 => socket, 1 => pipe]).prop_map(|address| Address { address }))
}

fn health_check() -> impl Strategy<Value = HealthCheck> {
    let checker = of(prop_oneof![
        text().prop_map(|path| HealthChecker::HttpHealthCheck(
            envoy_types::pb::envoy::config::core::v3::health_check::HttpHealthCheck {
                path,
                ..Default::default()
            }
        )),
        Just(HealthChecker::TcpHealthCheck(Default::default())),
        Just(HealthChecker::GrpcHealthCheck(Default::default())),
    ]);
    (duration(), duration(), value(), value(), checker).prop_map(
        |(interval, timeout, unhealthy_threshold, healthy_threshold, health_checker)| HealthCheck {
            interval,
            timeout,
            unhealthy_threshold,
            healthy_threshold,
            health_checker,
            ..Default::default()
        },
    )
}

fn outlier_detection() -> impl Strategy<Value = OutlierDetection> {
    (
        value(),
        value(),
        value(),
        duration(),
        value(),
        duration(),
        duration(),
    )
        .prop_map(
            |(consecutive_5xx, enforcing, gateway, base, percent, interval, max)| {
                OutlierDetection {
                    consecutive_5xx,
                    enforcing_consecutive_5xx: enforcing,
                    consecutive_gateway_failure: gateway,
                    base_ejection_time: base,
                    max_ejection_percent: percent,
                    interval,
                    max_ejection_time: max,
                    ..Default::default()
                }
            },
        )
}

fn transport_socket() -> impl Strategy<Value = TransportSocket> {
    let tls = prop_oneof![
        Just(meridian_routes::transport::mesh_tls(Some("mesh.test"))),
        text().prop_map(|domain| meridian_routes::transport::mesh_tls(Some(&domain))),
    ];
    let other = (text(), of(typed(Just(UpstreamTlsContext::default())))).prop_map(|(name, any)| {
        TransportSocket {
            name,
            config_type: any.map(transport_socket::ConfigType::TypedConfig),
        }
    });
    prop_oneof![tls, other]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    let kind = prop_oneof![
        prop::collection::vec(text(), 0..3).prop_map(|names| Kind::ListValue(ListValue {
            values: names
                .into_iter()
                .map(|s| Value {
                    kind: Some(Kind::StringValue(s)),
                })
                .collect(),
        })),
        text().prop_map(Kind::StringValue),
        any::<f64>().prop_map(Kind::NumberValue),
        Just(Kind::NullValue(0)),
    ];
    let namespace = prop_oneof![Just(METADATA_NAMESPACE.to_string()), text()];
    let field = prop_oneof![Just(ALLOWED_CLUSTERS.to_string()), text()];
    (namespace, field, of(kind)).prop_map(|(namespace, field, kind)| Metadata {
        filter_metadata: [(
            namespace,
            Struct {
                fields: [(field, Value { kind })].into(),
            },
        )]
        .into(),
        ..Default::default()
    })
}

pub fn cluster() -> impl Strategy<Value = Cluster> {
    let thresholds = (value(), value(), value()).prop_map(|(r, c, p)| Thresholds {
        max_requests: r,
        max_connections: c,
        max_pending_requests: p,
        ..Default::default()
    });
    (
        name(),
        enum_value(9),
        of(name()),
        duration(),
        prop::collection::vec(health_check(), 0..2),
        of(outlier_detection()),
        of(prop::collection::vec(thresholds, 0..2)),
        of(transport_socket()),
        of(metadata()),
        any::<bool>(),
    )
        .prop_map(
            |(
                name,
                lb_policy,
                eds,
                connect_timeout,
                health_checks,
                outlier,
                limits,
                socket,
                metadata,
                http2,
            )| {
                let mut cluster = Cluster {
                    name,
                    lb_policy,
                    eds_cluster_config: eds.map(|service_name| cluster::EdsClusterConfig {
                        service_name,
                        ..Default::default()
                    }),
                    connect_timeout,
                    health_checks,
                    outlier_detection: outlier,
                    circuit_breakers: limits.map(|thresholds| CircuitBreakers {
                        thresholds,
                        ..Default::default()
                    }),
                    transport_socket: socket,
                    metadata,
                    ..Default::default()
                };
                if http2 {
                    cluster.typed_extension_protocol_options.insert(
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
                        Any::default(),
                    );
                }
                cluster
            },
        )
}

pub fn load_assignment() -> impl Strategy<Value = ClusterLoadAssignment> {
    let host = prop_oneof![
        4 => address().prop_map(|address| HostIdentifier::Endpoint(Endpoint {
            address,
            ..Default::default()
        })),
        1 => text().prop_map(HostIdentifier::EndpointName),
    ];
    let endpoint =
        (of(host), enum_value(5), value()).prop_map(|(host, health, weight)| LbEndpoint {
            host_identifier: host,
            health_status: health,
            load_balancing_weight: weight,
            ..Default::default()
        });
    let priority = prop_oneof![0..4u32, Just(u32::MAX), any::<u32>()];
    let locality = (
        of((text(), text(), text())),
        prop::collection::vec(endpoint, 0..4),
        value(),
        priority,
    )
        .prop_map(
            |(locality, lb_endpoints, weight, priority)| LocalityLbEndpoints {
                locality: locality.map(|(region, zone, sub_zone)| Locality {
                    region,
                    zone,
                    sub_zone,
                }),
                lb_endpoints,
                load_balancing_weight: weight,
                priority,
                ..Default::default()
            },
        );
    (name(), prop::collection::vec(locality, 0..4), of(value())).prop_map(
        |(cluster_name, endpoints, factor)| ClusterLoadAssignment {
            cluster_name,
            endpoints,
            policy: factor.map(|overprovisioning_factor| Policy {
                overprovisioning_factor,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn route_action() -> impl Strategy<Value = RouteAction> {
    let weighted = prop::collection::vec((name(), value()), 0..4).prop_map(|clusters| {
        ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: clusters
                .into_iter()
                .map(|(name, weight)| ClusterWeight {
                    name,
                    weight,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    });
    let specifier = of(prop_oneof![
        3 => name().prop_map(ClusterSpecifier::Cluster),
        3 => weighted,
        1 => text().prop_map(ClusterSpecifier::ClusterHeader),
    ]);
    let retry =
        (text(), value(), duration()).prop_map(|(retry_on, num_retries, per_try)| RetryPolicy {
            retry_on,
            num_retries,
            per_try_timeout: per_try,
            ..Default::default()
        });
    let hash = of(prop_oneof![
        text().prop_map(|header_name| PolicySpecifier::Header(Header {
            header_name,
            ..Default::default()
        })),
        any::<bool>().prop_map(|source_ip| PolicySpecifier::ConnectionProperties(
            ConnectionProperties { source_ip }
        )),
    ])
    .prop_map(|policy_specifier| HashPolicy {
        policy_specifier,
        terminal: false,
    });
    (
        specifier,
        duration(),
        of(retry),
        prop::collection::vec(hash, 0..2),
    )
        .prop_map(
            |(cluster_specifier, timeout, retry_policy, hash_policy)| RouteAction {
                cluster_specifier,
                timeout,
                retry_policy,
                hash_policy,
                ..Default::default()
            },
        )
}

pub fn route_configuration() -> impl Strategy<Value = RouteConfiguration> {
    let path = of(prop_oneof![
        3 => text().prop_map(PathSpecifier::Prefix),
        1 => text().prop_map(PathSpecifier::Path),
        1 => Just(PathSpecifier::SafeRegex(Default::default())),
    ]);
    let action = of(prop_oneof![
        4 => route_action().prop_map(Action::Route),
        1 => Just(Action::Redirect(Default::default())),
        1 => Just(Action::DirectResponse(Default::default())),
    ]);
    let route = (of(path), action).prop_map(|(path, action)| Route {
        r#match: path.map(|path_specifier| RouteMatch {
            path_specifier,
            ..Default::default()
        }),
        action,
        ..Default::default()
    });
    let virtual_host = (
        text(),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(route, 0..3),
    )
        .prop_map(|(name, domains, routes)| VirtualHost {
            name,
            domains,
            routes,
            ..Default::default()
        });
    (name(), prop::collection::vec(virtual_host, 0..3)).prop_map(|(name, virtual_hosts)| {
        RouteConfiguration {
            name,
            virtual_hosts,
            ..Default::default()
        }
    })
}

pub fn listener() -> impl Strategy<Value = Listener> {
    let connection_manager = of(prop_oneof![
        3 => name().prop_map(|route_config_name| RouteSpecifier::Rds(Rds {
            route_config_name,
            config_source: None,
        })),
        1 => Just(RouteSpecifier::RouteConfig(Default::default())),
    ])
    .prop_map(|route_specifier| HttpConnectionManager {
        route_specifier,
        ..Default::default()
    });
    let tcp_proxy = of(prop_oneof![
        3 => name().prop_map(tcp_proxy::ClusterSpecifier::Cluster),
        1 => Just(tcp_proxy::ClusterSpecifier::WeightedClusters(Default::default())),
    ])
    .prop_map(|cluster_specifier| TcpProxy {
        cluster_specifier,
        ..Default::default()
    });
    let config = prop_oneof![typed(connection_manager), typed(tcp_proxy)];
    let filter = (text(), of(config)).prop_map(|(name, config)| Filter {
        name,
        config_type: config.map(filter::ConfigType::TypedConfig),
    });
    let chain = prop::collection::vec(filter, 0..3).prop_map(|filters| FilterChain {
        filters,
        ..Default::default()
    });
    (name(), address(), prop::collection::vec(chain, 0..2)).prop_map(
        |(name, address, filter_chains)| Listener {
            name,
            address,
            filter_chains,
            ..Default::default()
        },
    )
}
