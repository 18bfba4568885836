//! Meridian's wire contract: the admin API and the Raft transport, generated
//! with tonic, and the xDS conventions shared by the compiler and the proxy.
//! xDS types come from a maintained crate, not from here.

#![allow(clippy::all)]

pub mod xds;

pub mod v1 {
    tonic::include_proto!("meridian.v1");

    /// Encoded descriptors, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("meridian_descriptor");
}
