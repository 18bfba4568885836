//! The `spec` of each kind, as written in manifests (camelCase fields), with
//! the checks that need nothing but the spec itself.

mod cluster;
mod endpoints;
mod failover;
mod resilience;
mod service;
mod split;
mod token;

pub use cluster::ClusterSpec;
pub use endpoints::{Endpoint, EndpointsSpec, Health, MAX_ENDPOINT_WEIGHT};
pub use failover::{FailoverPolicySpec, DEFAULT_OVERPROVISIONING_FACTOR};
pub use resilience::{Detector, OutlierDetection, OutlierSettings, RetryOn, RetryPolicy};
pub use service::{
    CircuitBreaker, HealthCheck, HttpHealthCheck, LbPolicy, Protocol, ServiceSpec, TcpHealthCheck,
    Transport,
};
pub use split::{SplitBackend, TrafficSplitSpec};
pub use token::{BootstrapTokenSpec, TokenRole};
