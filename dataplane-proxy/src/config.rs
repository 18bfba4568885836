//! The proxy's configuration, built from the xDS resources it holds. Pure:
//! decoding and checking here; a resource set that does not hold together
//! is refused (NACKed) and the previous configuration stays.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{cluster::LbPolicy, Cluster, OutlierDetection},
        core::v3::{address, socket_address::PortSpecifier, HealthStatus},
        endpoint::v3::{lb_endpoint::HostIdentifier, ClusterLoadAssignment},
        listener::v3::{filter::ConfigType, Listener},
        route::v3::{
            route::Action,
            route_action::{hash_policy::PolicySpecifier, ClusterSpecifier},
            route_match::PathSpecifier,
            RouteConfiguration,
        },
    },
    extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    },
};
use meridian_balance::{outlier, Host, Locality, OutlierPolicy, Policy};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};

pub use meridian_proto::xds::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// The resources held: type URL → name → (version, encoded message).
pub type Resources = BTreeMap<String, BTreeMap<String, (String, Vec<u8>)>>;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Port → what the outbound listener there does.
    pub listeners: BTreeMap<u16, ListenerKind>,
    pub routes: BTreeMap<String, Vec<VirtualHost>>,
    pub clusters: BTreeMap<String, ClusterConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ListenerKind {
    /// HTTP, routed by this route configuration.
    Http(String),
    /// Raw TCP, proxied to this cluster.
    Tcp(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub prefix: String,
    /// Target clusters and weights.
    pub clusters: Vec<(String, u32)>,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub hash: Option<HashOn>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// Retry any 5xx response.
    pub on_5xx: bool,
    /// Retry 502, 503 and 504.
    pub on_gateway_error: bool,
    /// Try another host when a connection cannot be made.
    pub on_connect_failure: bool,
    /// Retry when the connection is reset or closed before a response arrives.
    pub on_reset: bool,
}

impl Retry {
    /// Envoy's `retry_on`: `5xx` and `gateway-error` take in connect failures and resets.
    fn parse(attempts: u32, per_try_timeout: Option<Duration>, retry_on: &str) -> Self {
        let on = |name: &str| retry_on.split(',').any(|o| o.trim() == name);
        let on_5xx = on("5xx");
        let on_gateway_error = on_5xx || on("gateway-error");
        Retry {
            attempts,
            per_try_timeout,
            on_5xx,
            on_gateway_error,
            on_connect_failure: on_gateway_error || on("connect-failure"),
            on_reset: on_gateway_error || on("reset"),
        }
    }

    /// Whether a response with this status is retried.
    pub fn on_status(&self, status: u16) -> bool {
        (self.on_5xx && (500..600).contains(&status))
            || (self.on_gateway_error && matches!(status, 502..=504))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HashOn {
    SourceIp,
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    #[serde(skip)]
    pub policy: Policy,
    pub policy_name: String,
    pub connect_timeout: Duration,
    pub http2: bool,
    pub overprovisioning: f64,
    #[serde(skip)]
    pub localities: Vec<Locality>,
    /// `region/zone/sub_zone` of each locality, in the same order, for metrics.
    pub locality_names: Vec<String>,
    #[serde(skip)]
    pub outlier: Option<OutlierPolicy>,
    pub health_check: Option<HealthCheckConfig>,
    pub limits: Option<Limits>,
    /// Mutual TLS to the proxies in front of the endpoints.
    pub mesh_tls: Option<crate::transport::MeshTls>,
    /// The member clusters the service admits (inbound), when restricted.
    pub allowed_clusters: Option<Vec<String>>,
}

/// Circuit breakers, per cluster: requests, connections, and requests waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_requests: u32,
    pub max_connections: u32,
    pub max_pending_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// HTTP GET this path; a TCP connect when `None`.
    pub http_path: Option<String>,
}

fn health_check(cluster: &Cluster) -> Result<Option<HealthCheckConfig>, String> {
    use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
    let Some(hc) = cluster.health_checks.first() else {
        return Ok(None);
    };
    let http_path = match &hc.health_checker {
        Some(HealthChecker::HttpHealthCheck(http)) => Some(http.path.clone()),
        Some(HealthChecker::TcpHealthCheck(_)) => None,
        _ => return Ok(None),
    };
    Ok(Some(HealthCheckConfig {
        interval: duration("health check interval", hc.interval.as_ref())?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5)),
        timeout: duration("health check timeout", hc.timeout.as_ref())?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(1)),
        unhealthy_threshold: hc
            .unhealthy_threshold
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(3),
        healthy_threshold: hc.healthy_threshold.as_ref().map(|v| v.value).unwrap_or(2),
        http_path,
    }))
}

/// The outlier policy of a cluster: Envoy's gateway-failure detector when
/// the 5xx one is turned off (Meridian's default), else the 5xx one.
fn outlier_policy(od: &OutlierDetection) -> Result<OutlierPolicy, String> {
    let value = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>| v.map(|v| v.value);
    let gateway_only = value(od.enforcing_consecutive_5xx.as_ref()) == Some(0)
        && od.consecutive_gateway_failure.is_some();
    let consecutive = if gateway_only {
        value(od.consecutive_gateway_failure.as_ref())
    } else {
        value(od.consecutive_5xx.as_ref())
    };
    Ok(OutlierPolicy {
        consecutive_failures: consecutive.unwrap_or(5).max(1),
        base_ejection: duration("base_ejection_time", od.base_ejection_time.as_ref())?
            .unwrap_or(Duration::from_secs(30)),
        max_ejection_percent: value(od.max_ejection_percent.as_ref())
            .unwrap_or(10)
            .min(100),
        any_5xx: !gateway_only,
        interval: duration("outlier detection interval", od.interval.as_ref())?
            .unwrap_or(outlier::DEFAULT_INTERVAL),
        max_ejection: duration("max_ejection_time", od.max_ejection_time.as_ref())?
            .unwrap_or(outlier::DEFAULT_MAX_EJECTION),
    })
}

fn decode<M: Message + Default>(type_url: &str, name: &str, bytes: &[u8]) -> Result<M, String> {
    M::decode(bytes).map_err(|e| format!("{type_url} {name}: does not decode: {e}"))
}

/// Protobuf's own bound on a duration: ±10,000 years.
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;

/// A protobuf duration as the proxy uses it, a negative one as zero; one
/// beyond protobuf's range is refused, as Envoy refuses it: the proxy adds
/// durations to the clock (a request's deadline, an ejection's end), which
/// would overflow and panic.
fn duration(
    field: &str,
    d: Option<&envoy_types::pb::google::protobuf::Duration>,
) -> Result<Option<Duration>, String> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds.unsigned_abs() > MAX_DURATION_SECONDS || d.nanos.unsigned_abs() > 999_999_999 {
        return Err(format!(
            "{field} of {}s {}ns is out of range",
            d.seconds, d.nanos
        ));
    }
    Ok(Some(Duration::new(
        d.seconds.max(0) as u64,
        d.nanos.max(0) as u32,
    )))
}

fn policy(lb: i32) -> Result<(Policy, String), String> {
    let policy = match LbPolicy::try_from(lb) {
        Ok(LbPolicy::RoundRobin) => Policy::RoundRobin,
        Ok(LbPolicy::Random) => Policy::Random,
        Ok(LbPolicy::LeastRequest) => Policy::LeastRequest,
        Ok(LbPolicy::RingHash) => Policy::RingHash,
        Ok(LbPolicy::Maglev) => Policy::Maglev,
        other => return Err(format!("unsupported lb_policy {other:?}")),
    };
    Ok((policy, format!("{policy:?}")))
}

/// The lowest priority (highest number) a load assignment may give, as
/// Envoy's API bounds it (`lte: 128`): the balancer keeps a level for every
/// priority up to the lowest, so `u32::MAX` would ask for billions of them.
const MAX_PRIORITY: u32 = 128;

fn localities(cla: &ClusterLoadAssignment) -> Result<Vec<Locality>, String> {
    if let Some(l) = cla.endpoints.iter().find(|l| l.priority > MAX_PRIORITY) {
        return Err(format!(
            "load assignment {}: priority {} is above {MAX_PRIORITY}",
            cla.cluster_name, l.priority
        ));
    }
    let localities = cla
        .endpoints
        .iter()
        .map(|l| Locality {
            priority: l.priority,
            weight: l
                .load_balancing_weight
                .as_ref()
                .map(|w| w.value)
                .unwrap_or(1),
            hosts: l
                .lb_endpoints
                .iter()
                .filter_map(|e| {
                    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        return None;
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref()?.address.as_ref()
                    else {
                        return None;
                    };
                    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                        return None;
                    };
                    let healthy = matches!(
                        HealthStatus::try_from(e.health_status),
                        Ok(HealthStatus::Healthy) | Ok(HealthStatus::Unknown)
                    );
                    let host = if sa.address.contains(':') {
                        format!("[{}]", sa.address)
                    } else {
                        sa.address.clone()
                    };
                    Some(Host {
                        address: format!("{host}:{port}"),
                        weight: e
                            .load_balancing_weight
                            .as_ref()
                            .map(|w| w.value)
                            .unwrap_or(1),
                        healthy,
                    })
                })
                .collect(),
        })
        .collect();
    Ok(localities)
}

fn routes(config: &RouteConfiguration) -> Result<Vec<VirtualHost>, String> {
    config
        .virtual_hosts
        .iter()
        .map(|vh| {
            let routes = vh
                .routes
                .iter()
                .map(|r| {
                    let prefix = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                        Some(PathSpecifier::Prefix(p)) => p.clone(),
                        None => String::new(),
                        Some(other) => {
                            return Err(format!(
                                "route in {}: unsupported match {other:?}",
                                vh.name
                            ))
                        }
                    };
                    let Some(Action::Route(action)) = &r.action else {
                        return Err(format!(
                            "route in {}: only route actions are supported",
                            vh.name
                        ));
                    };
                    let clusters = match &action.cluster_specifier {
                        Some(ClusterSpecifier::Cluster(c)) => vec![(c.clone(), 1)],
                        Some(ClusterSpecifier::WeightedClusters(w)) => w
                            .clusters
                            .iter()
                            .map(|c| {
                                (
                                    c.name.clone(),
                                    c.weight.as_ref().map(|w| w.value).unwrap_or(0),
                                )
                            })
                            .collect(),
                        other => {
                            return Err(format!(
                                "route in {}: unsupported cluster specifier {other:?}",
                                vh.name
                            ))
                        }
                    };
                    let in_host = |e: String| format!("route in {}: {e}", vh.name);
                    let retry = match &action.retry_policy {
                        Some(p) => Some(Retry::parse(
                            p.num_retries.as_ref().map(|n| n.value).unwrap_or(1),
                            duration("per_try_timeout", p.per_try_timeout.as_ref())
                                .map_err(in_host)?,
                            &p.retry_on,
                        )),
                        None => None,
                    };
                    let hash = action
                        .hash_policy
                        .first()
                        .and_then(|h| match &h.policy_specifier {
                            Some(PolicySpecifier::Header(header)) => {
                                Some(HashOn::Header(header.header_name.clone()))
                            }
                            Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => {
                                Some(HashOn::SourceIp)
                            }
                            _ => None,
                        });
                    Ok(Route {
                        prefix,
                        clusters,
                        timeout: duration("timeout", action.timeout.as_ref()).map_err(in_host)?,
                        retry,
                        hash,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(VirtualHost {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                routes,
            })
        })
        .collect()
}

/// What an outbound listener does, and its port; `None` for listeners this
/// proxy does not serve (api listeners for proxyless clients).
fn listener_kind(listener: &Listener) -> Result<Option<(u16, ListenerKind)>, String> {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        tcp_proxy, TcpProxy,
    };
    let name = &listener.name;
    let Some(address) = listener.address.as_ref().and_then(|a| a.address.as_ref()) else {
        return Ok(None);
    };
    let address::Address::SocketAddress(sa) = address else {
        return Err(format!(
            "listener {name}: only socket addresses are supported"
        ));
    };
    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
        return Err(format!("listener {name}: no port"));
    };
    let port =
        u16::try_from(port).map_err(|_| format!("listener {name}: port {port} out of range"))?;
    let configs = listener
        .filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        });
    for any in configs {
        if any.type_url.ends_with("HttpConnectionManager") {
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).map_err(|e| {
                format!("listener {name}: HttpConnectionManager does not decode: {e}")
            })?;
            return match hcm.route_specifier {
                Some(RouteSpecifier::Rds(rds)) => {
                    Ok(Some((port, ListenerKind::Http(rds.route_config_name))))
                }
                _ => Err(format!(
                    "listener {name}: only RDS route configurations are supported"
                )),
            };
        }
        if any.type_url.ends_with("TcpProxy") {
            let tcp = TcpProxy::decode(any.value.as_slice())
                .map_err(|e| format!("listener {name}: TcpProxy does not decode: {e}"))?;
            return match tcp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => {
                    Ok(Some((port, ListenerKind::Tcp(cluster))))
                }
                _ => Err(format!("listener {name}: a TCP proxy needs a cluster")),
            };
        }
    }
    Err(format!(
        "listener {name}: no HTTP connection manager or TCP proxy filter"
    ))
}

impl Snapshot {
    /// Builds and checks the configuration the resources describe. With
    /// `strict_routes`, a route to an unknown cluster is an error (a route
    /// update that does not hold together); without, it is served as 503.
    pub fn build(resources: &Resources, strict_routes: bool) -> Result<Snapshot, String> {
        let empty = BTreeMap::new();
        let of = |t: &str| resources.get(t).unwrap_or(&empty);
        let mut clusters = BTreeMap::new();
        for (name, (_, bytes)) in of(CLUSTER) {
            let cluster: Cluster = decode(CLUSTER, name, bytes)?;
            let in_cluster = |e: String| format!("cluster {name}: {e}");
            let (policy, policy_name) = policy(cluster.lb_policy).map_err(in_cluster)?;
            let eds_name = cluster
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| name.clone());
            let cla: Option<ClusterLoadAssignment> = match of(ENDPOINT).get(&eds_name) {
                Some((_, bytes)) => Some(decode(ENDPOINT, &eds_name, bytes)?),
                None => None,
            };
            let overprovisioning = cla
                .as_ref()
                .and_then(|c| c.policy.as_ref())
                .and_then(|p| p.overprovisioning_factor.as_ref())
                .map(|f| f64::from(f.value) / 100.0)
                .unwrap_or(1.4);
            clusters.insert(
                name.clone(),
                ClusterConfig {
                    policy,
                    policy_name,
                    connect_timeout: duration("connect_timeout", cluster.connect_timeout.as_ref())
                        .map_err(in_cluster)?
                        .unwrap_or(Duration::from_secs(5)),
                    http2: cluster
                        .typed_extension_protocol_options
                        .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
                    overprovisioning,
                    localities: cla
                        .as_ref()
                        .map(localities)
                        .transpose()?
                        .unwrap_or_default(),
                    locality_names: cla
                        .as_ref()
                        .map(|c| {
                            c.endpoints
                                .iter()
                                .map(|l| {
                                    let l = l.locality.clone().unwrap_or_default();
                                    format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    health_check: health_check(&cluster).map_err(in_cluster)?,
                    mesh_tls: crate::transport::mesh_tls(&cluster).map_err(in_cluster)?,
                    allowed_clusters: crate::transport::allowed_clusters(&cluster),
                    limits: cluster
                        .circuit_breakers
                        .as_ref()
                        .and_then(|cb| cb.thresholds.first())
                        .map(|t| Limits {
                            max_requests: t.max_requests.as_ref().map(|v| v.value).unwrap_or(1024),
                            max_connections: t
                                .max_connections
                                .as_ref()
                                .map(|v| v.value)
                                .unwrap_or(1024),
                            max_pending_requests: t
                                .max_pending_requests
                                .as_ref()
                                .map(|v| v.value)
                                .unwrap_or(1024),
                        }),
                    outlier: cluster
                        .outlier_detection
                        .as_ref()
                        .map(outlier_policy)
                        .transpose()
                        .map_err(in_cluster)?,
                },
            );
        }
        let mut routes = BTreeMap::new();
        for (name, (_, bytes)) in of(ROUTE) {
            let config: RouteConfiguration = decode(ROUTE, name, bytes)?;
            let vhosts = self::routes(&config)?;
            for route in vhosts.iter().flat_map(|v| &v.routes) {
                for (cluster, _) in &route.clusters {
                    if strict_routes && !clusters.contains_key(cluster) {
                        return Err(format!(
                            "route configuration {name} refers to unknown cluster {cluster}"
                        ));
                    }
                }
            }
            routes.insert(name.clone(), vhosts);
        }
        let mut listeners = BTreeMap::new();
        for (name, (_, bytes)) in of(LISTENER) {
            let listener: Listener = decode(LISTENER, name, bytes)?;
            if let Some((port, kind)) = listener_kind(&listener)? {
                listeners.insert(port, kind);
            }
        }
        Ok(Snapshot {
            listeners,
            routes,
            clusters,
        })
    }
}

/// A round-robin cluster of healthy `hosts` (`ip:port`, weight 1) in one
/// locality, for tests of what serves it.
#[cfg(test)]
pub fn test_cluster_of(hosts: &[&str]) -> ClusterConfig {
    ClusterConfig {
        localities: vec![Locality {
            priority: 0,
            weight: 1,
            hosts: hosts
                .iter()
                .map(|address| Host {
                    address: address.to_string(),
                    weight: 1,
                    healthy: true,
                })
                .collect(),
        }],
        locality_names: vec!["r/z/".into()],
        ..test_cluster(None)
    }
}

/// A cluster with no endpoints, for tests of what reads its settings.
#[cfg(test)]
pub fn test_cluster(allowed_clusters: Option<Vec<String>>) -> ClusterConfig {
    ClusterConfig {
        policy: Policy::RoundRobin,
        policy_name: "round_robin".into(),
        connect_timeout: Duration::from_secs(1),
        http2: false,
        overprovisioning: 1.4,
        localities: Vec::new(),
        locality_names: Vec::new(),
        outlier: None,
        health_check: None,
        limits: None,
        mesh_tls: None,
        allowed_clusters,
    }
}
