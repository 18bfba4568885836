//! The xDS conventions that the route compiler writes and every Meridian
//! proxy reads, beyond Envoy's own types: type URLs, where Meridian's
//! settings sit in a cluster's metadata, and the transport socket name. One
//! place, so meridian-proxy needs nothing of the compiler.

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

/// The transport socket of a service carried over mutual TLS between proxies.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// The cluster metadata namespace Meridian's own settings live under.
pub const METADATA_NAMESPACE: &str = "meridian.io";
/// The member clusters a service admits, under `METADATA_NAMESPACE`.
pub const ALLOWED_CLUSTERS: &str = "allowedClusters";
