//! Meridian's wire contract: the admin API and leader forwarding, generated
//! with tonic; the Raft peer protocol's framing (`raft_wire`); and the xDS
//! conventions shared by the compiler and the proxy. xDS types come from a
//! maintained crate, not from here.

#![allow(clippy::all)]

pub mod raft_wire;
pub mod xds;

pub mod v1 {
    tonic::include_proto!("meridian.v1");

    /// The largest admin response a client takes: a List of a large mesh's
    /// Endpoints (100,000 endpoints are about 8 MB) is far over tonic's
    /// default of 4 MiB.
    pub const MAX_ADMIN_RESPONSE: usize = 256 * 1024 * 1024;

    /// Encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("meridian_descriptor");
}
