//! CDS: one `Cluster` per service, with its LB policy, outlier detection,
//! circuit breakers, health checks and endpoints fetched over EDS/ADS.

use crate::{names, proto};
use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            circuit_breakers::Thresholds,
            cluster::{
                common_lb_config::{LocalityConfigSpecifier, LocalityWeightedLbConfig},
                ClusterDiscoveryType, CommonLbConfig, DiscoveryType, EdsClusterConfig,
                LbPolicy as EnvoyLb,
            },
            CircuitBreakers, Cluster, OutlierDetection,
        },
        core::v3::{
            health_check::{self, HealthChecker},
            HealthCheck, Http2ProtocolOptions,
        },
    },
    extensions::upstreams::http::v3::{
        http_protocol_options::{
            explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        },
        HttpProtocolOptions,
    },
};
use meridian_model::spec::{
    Detector, LbPolicy, OutlierDetection as OutlierSpec, OutlierSettings, Protocol, ServiceSpec,
};

/// How long a proxy waits to connect to an endpoint, unless the service's
/// timeout is shorter: a host gone from the network costs a request this
/// long before it moves on (a TCP handshake takes one round trip, well
/// under this even across regions), so failover waits little.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const DEFAULT_HEALTH_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub fn lb_policy(lb: LbPolicy) -> EnvoyLb {
    match lb {
        // Envoy's round robin is weighted by endpoint weights.
        LbPolicy::RoundRobin | LbPolicy::Weighted => EnvoyLb::RoundRobin,
        LbPolicy::Random => EnvoyLb::Random,
        LbPolicy::LeastRequest => EnvoyLb::LeastRequest,
        LbPolicy::IpHash | LbPolicy::RingHash => EnvoyLb::RingHash,
        LbPolicy::Maglev => EnvoyLb::Maglev,
    }
}

/// Envoy's outlier detection for the settings in force. The default
/// detector counts gateway errors (connect failures and resets among them)
/// and turns Envoy's own 5xx detector off, so an application's 500s do not
/// eject a host that is up.
fn outlier_detection(settings: &OutlierSettings) -> OutlierDetection {
    let mut od = OutlierDetection {
        interval: Some(proto::duration(settings.interval)),
        base_ejection_time: Some(proto::duration(settings.base_ejection_time)),
        max_ejection_percent: Some(proto::u32_value(settings.max_ejection_percent)),
        ..Default::default()
    };
    match settings.detector {
        Detector::Consecutive5xx(n) => od.consecutive_5xx = Some(proto::u32_value(n)),
        Detector::ConsecutiveGatewayErrors(n) => {
            od.consecutive_gateway_failure = Some(proto::u32_value(n));
            od.enforcing_consecutive_gateway_failure = Some(proto::u32_value(100));
            od.enforcing_consecutive_5xx = Some(proto::u32_value(0));
        }
    }
    od
}

pub fn cluster(id: &crate::ServiceId, spec: &ServiceSpec, trust_domain: Option<&str>) -> Cluster {
    let name = names::service(id);
    let connect_timeout = spec
        .timeout
        .map(|t| t.as_std().min(DEFAULT_CONNECT_TIMEOUT))
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let mut cluster = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(proto::ads()),
            service_name: name,
        }),
        connect_timeout: Some(proto::duration(connect_timeout)),
        lb_policy: lb_policy(spec.lb) as i32,
        common_lb_config: Some(CommonLbConfig {
            locality_config_specifier: Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
                LocalityWeightedLbConfig {},
            )),
            ..Default::default()
        }),
        transport_socket: spec
            .mtls()
            .then(|| crate::transport::mesh_tls(trust_domain)),
        metadata: crate::transport::metadata(spec),
        ..Default::default()
    };
    cluster.outlier_detection =
        OutlierSpec::settings(spec.outlier_detection.as_ref()).map(|od| outlier_detection(&od));
    if let Some(cb) = &spec.circuit_breaker {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: Some(proto::u32_value(cb.max_connections)),
                max_pending_requests: Some(proto::u32_value(cb.max_pending_requests)),
                max_requests: Some(proto::u32_value(cb.max_requests)),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(hc) = &spec.health_check {
        let checker = match &hc.http {
            Some(http) => HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                path: http.path.clone(),
                ..Default::default()
            }),
            None => HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default()),
        };
        cluster.health_checks = vec![HealthCheck {
            timeout: Some(proto::duration(
                hc.timeout
                    .map(|t| t.as_std())
                    .unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT),
            )),
            interval: Some(proto::duration(hc.interval.as_std())),
            unhealthy_threshold: Some(proto::u32_value(hc.unhealthy_threshold)),
            healthy_threshold: Some(proto::u32_value(hc.healthy_threshold)),
            health_checker: Some(checker),
            ..Default::default()
        }];
    }
    if matches!(spec.protocol, Protocol::Http2 | Protocol::Grpc) {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        cluster.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            proto::any(&options),
        );
    }
    cluster
}
