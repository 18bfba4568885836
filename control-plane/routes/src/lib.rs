//! Route compilation: a deterministic function from the replicated mesh state
//! and a proxy's locality to Envoy xDS v3 resources (Listener,
//! RouteConfiguration, Cluster, ClusterLoadAssignment).
//!
//! No I/O: the xDS server feeds it state and sends what it returns. It uses
//! only the protobuf message types of `envoy-types`.

mod cluster;
mod compile;
mod endpoints;
pub mod failover;
mod listener;
pub mod names;
mod proto;
mod route;
mod split;
mod state;
pub mod transport;
mod version;

pub use compile::{compile, Compiled, Compiler, ProxyLocality, XdsResource};
pub use state::{MeshState, ServiceId};
pub use version::set_version;

/// xDS type URLs, in the order a client should apply them (CDS before EDS, LDS before RDS).
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const ALL: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

    /// Types whose state-of-the-world responses must carry every resource
    /// (a missing one means deleted); for the others, only what was asked.
    pub fn is_full_state(type_url: &str) -> bool {
        type_url == CLUSTER || type_url == LISTENER
    }
}
