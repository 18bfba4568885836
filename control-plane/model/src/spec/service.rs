//! `Service`: protocol, port, load balancing and resilience settings of one service.

use super::resilience::{OutlierDetection, RetryPolicy};
use crate::{Duration, ModelError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default)]
    pub lb: LbPolicy,
    /// For the hash policies: `source_ip` or `header:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// The member clusters whose proxies may reach this service: only they
    /// receive its routes, and only they are accepted by its inbound
    /// listeners. Every cluster when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_clusters: Option<Vec<String>>,
    /// How proxies carry the service's traffic between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

/// Transport settings between proxies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transport {
    /// Mutual TLS with the proxies' mesh certificates: the calling proxy
    /// originates it, the proxy in front of each endpoint terminates it.
    #[serde(default)]
    pub mtls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    Random,
    Weighted,
    LeastRequest,
    IpHash,
    RingHash,
    Maglev,
}

impl LbPolicy {
    pub fn is_hash(&self) -> bool {
        matches!(
            self,
            LbPolicy::IpHash | LbPolicy::RingHash | LbPolicy::Maglev
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    pub interval: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheck {}

impl ServiceSpec {
    /// Whether proxies of `cluster` may reach the service.
    pub fn allows_cluster(&self, cluster: &str) -> bool {
        self.allowed_clusters
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|c| c == cluster))
    }

    pub fn mtls(&self) -> bool {
        self.transport.is_some_and(|t| t.mtls)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        for (i, cluster) in self.allowed_clusters.iter().flatten().enumerate() {
            crate::names::check_label(&format!("spec.allowedClusters[{i}]"), cluster)?;
        }
        if self.port == 0 {
            return Err(ModelError::invalid(
                "spec.port",
                "must be between 1 and 65535",
            ));
        }
        self.validate_hash()?;
        if let Some(retries) = &self.retries {
            retries.validate()?;
        }
        if let Some(od) = &self.outlier_detection {
            od.validate()?;
        }
        if let Some(hc) = &self.health_check {
            self.validate_health_check(hc)?;
        }
        Ok(())
    }

    fn validate_hash(&self) -> Result<(), ModelError> {
        match (&self.hash_on, self.lb.is_hash()) {
            (Some(_), false) => Err(ModelError::invalid(
                "spec.hashOn",
                "only applies to lb ip_hash, ring_hash or maglev",
            )),
            (Some(key), true) if key != "source_ip" => match key.strip_prefix("header:") {
                Some(name) if is_header_name(name) => Ok(()),
                _ => Err(ModelError::invalid(
                    "spec.hashOn",
                    format!("'{key}' must be source_ip or header:NAME"),
                )),
            },
            _ => Ok(()),
        }
    }

    fn validate_health_check(&self, hc: &HealthCheck) -> Result<(), ModelError> {
        match (&hc.http, &hc.tcp) {
            (Some(_), Some(_)) => {
                return Err(ModelError::invalid(
                    "spec.healthCheck",
                    "give either http or tcp, not both",
                ))
            }
            (None, None) => {
                return Err(ModelError::invalid("spec.healthCheck", "needs http or tcp"))
            }
            (Some(http), None) if !http.path.starts_with('/') => {
                return Err(ModelError::invalid(
                    "spec.healthCheck.http.path",
                    format!("'{}' must start with '/'", http.path),
                ))
            }
            _ => {}
        }
        if hc.interval.as_std().is_zero() {
            return Err(ModelError::invalid(
                "spec.healthCheck.interval",
                "must be positive",
            ));
        }
        if hc.unhealthy_threshold == 0 || hc.healthy_threshold == 0 {
            return Err(ModelError::invalid(
                "spec.healthCheck.unhealthyThreshold",
                "thresholds must be at least 1",
            ));
        }
        Ok(())
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
