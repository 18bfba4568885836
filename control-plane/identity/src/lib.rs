//! The mesh's identities: SPIFFE IDs, the certificate authority that issues
//! them, and the mutual TLS every gRPC connection runs over.

pub mod backoff;
pub mod ca;
pub mod ca_dir;
pub mod enroll;
pub mod enrolment;
pub mod expiry;
pub mod spiffe;
pub mod tls;
pub mod token;
mod x509;
