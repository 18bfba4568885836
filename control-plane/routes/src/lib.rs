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
pub mod split;
mod state;
pub mod transport;
mod version;

pub use compile::{compile, Compiled, Compiler, ProxyLocality, XdsResource};
pub use state::{MeshState, ServiceId};
pub use version::set_version;

pub use meridian_proto::xds::type_url;
