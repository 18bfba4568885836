//! The mesh's identity: SPIFFE IDs and the certificate authority that issues
//! them. The first step of mTLS everywhere; servers do not use it yet.

pub mod ca;
pub mod spiffe;
